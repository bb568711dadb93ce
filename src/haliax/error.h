// Errors raised by haliax. Messages follow Haliax's wording (they are part of the interface) and always
// name the axes involved.
#pragma once

#include <stdexcept>
#include <string>

namespace haliax {

// Haliax's ValueError: a caller passed axes or arguments that do not fit.
class ValueError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

[[noreturn]] inline void value_error(const std::string& message) { throw ValueError(message); }

}  // namespace haliax
