// Default initialisation of linears and norms.
#include "tessera/nn/init.h"

#include "tessera/nn/linear.h"
#include "tessera/nn/norm.h"

#include <ATen/ATen.h>

namespace tessera::nn {

void init_linears_and_norms(torch::nn::Module& root, double std) {
  at::NoGradGuard g;
  for (const auto& m : root.modules(/*include_self=*/false)) {
    if (auto* lin = m->as<LinearImpl>()) {
      lin->weight().normal_(0, std);
      if (lin->bias().defined()) lin->bias().zero_();
    } else if (auto* norm = m->as<NormImpl>()) {
      norm->reset_parameters();
    }
  }
}

}  // namespace tessera::nn
