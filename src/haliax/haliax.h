// The whole of haliax: `#include "haliax/haliax.h"` and `namespace hax = haliax;`.
#pragma once

#include "haliax/axis.h"
#include "haliax/core.h"
#include "haliax/error.h"
#include "haliax/named_array.h"
#include "haliax/nn/activations.h"
#include "haliax/nn/attention.h"
#include "haliax/nn/dropout.h"
#include "haliax/nn/embedding.h"
#include "haliax/nn/linear.h"
#include "haliax/nn/loss.h"
#include "haliax/nn/mlp.h"
#include "haliax/nn/module.h"
#include "haliax/nn/normalization.h"
#include "haliax/nn/stacked.h"
#include "haliax/ops.h"
#include "haliax/random.h"
