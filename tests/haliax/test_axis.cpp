#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "haliax/axis.h"
#include "haliax/error.h"

using namespace haliax;
using ::testing::HasSubstr;

TEST(Axis, EqualityUsesNameAndSize) {
  Axis a("embed", 4);
  EXPECT_EQ(a, Axis("embed", 4));
  EXPECT_NE(a, Axis("embed", 5));
  EXPECT_NE(a, Axis("hidden", 4));
  EXPECT_EQ(a.alias("hidden"), Axis("hidden", 4));
  EXPECT_EQ(a.resize(7), Axis("embed", 7));
}
