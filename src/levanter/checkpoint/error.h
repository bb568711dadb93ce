// The one error type of the checkpoint layer. Messages name the file (and the tensor, where there is one),
// so that a person can tell which checkpoint is bad and why.
#pragma once

#include <stdexcept>
#include <string>

namespace levanter::checkpoint {

class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace levanter::checkpoint
