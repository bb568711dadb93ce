// LEVANTER_FAULT: the crash-test hook that kills this process at a named point (runtime/fault.h).
#include <gtest/gtest.h>

#include <cstdlib>

#include "levanter/runtime/fault.h"

using levanter::runtime::fault_armed;
using levanter::runtime::maybe_inject_fault;

TEST(Fault, HookParsesItsVariable) {
  ::setenv("LEVANTER_FAULT", "data_write:3, checkpoint_write:20,checkpoint_commit:7", 1);
  EXPECT_TRUE(fault_armed("checkpoint_write", 20));
  EXPECT_TRUE(fault_armed("checkpoint_commit", 7));
  EXPECT_FALSE(fault_armed("checkpoint_write", 2));
  EXPECT_FALSE(fault_armed("checkpoint_write", 200));
  ::unsetenv("LEVANTER_FAULT");
  EXPECT_FALSE(fault_armed("checkpoint_write", 20));
  maybe_inject_fault("checkpoint_write", 20);  // unarmed: returns
}
