"""Reads a TensorBoard log directory with TensorBoard's own loader and prints what it holds as JSON.

    tensorboard_reference.py LOGDIR     ->  {"scalars": {tag: [[step, value], ...]}, "text": {tag: [[step, text]]},
                                             "files": N}

Uses TensorBoard's EventAccumulator: `simple_value` summaries are its scalars; text-plugin summaries are string
tensors. Run by
tests/interop/test_tensorboard_interop.cpp in the pinned venv of scripts/interop_env; never downloads.
"""

import json
import os
import sys

from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util


def main():
    logdir = sys.argv[1]
    acc = event_accumulator.EventAccumulator(
        logdir, size_guidance={event_accumulator.TENSORS: 0, event_accumulator.SCALARS: 0}
    )
    acc.Reload()
    tags = acc.Tags()
    out = {"scalars": {}, "text": {}, "files": len([f for f in os.listdir(logdir) if "tfevents" in f])}
    for tag in tags.get("scalars", []):
        out["scalars"][tag] = [[e.step, e.value] for e in acc.Scalars(tag)]
    for tag in tags.get("tensors", []):
        events = acc.Tensors(tag)
        meta = acc.SummaryMetadata(tag)
        plugin = meta.plugin_data.plugin_name
        for e in events:
            value = tensor_util.make_ndarray(e.tensor_proto)
            if plugin == "text":
                text = value.reshape(-1)[0]
                out["text"].setdefault(tag, []).append([e.step, text.decode("utf-8")])
            else:
                out["scalars"].setdefault(tag, []).append([e.step, float(value)])
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
