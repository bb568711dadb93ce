#include "haliax/nn/stacked.h"

namespace haliax::nn {

namespace {
thread_local std::shared_ptr<const LayerGatherFn> current_gather;
}

LayerGather::LayerGather(LayerGatherFn fn) : previous_(current_gather) {
  current_gather = std::make_shared<const LayerGatherFn>(std::move(fn));
}

LayerGather::~LayerGather() { current_gather = previous_; }

std::shared_ptr<const LayerGatherFn> LayerGather::current() { return current_gather; }

}  // namespace haliax::nn
