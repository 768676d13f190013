// Precompiled header for the library's own translation units (never installed or included
// by public headers): the heavy ATen/torch headers every module file needs.
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/conv.h>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>
