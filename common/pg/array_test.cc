#include "common/pg/array.h"

#include <gtest/gtest.h>

namespace aijobs::pg {
namespace {

TEST(ArrayBuilderTest, QuotesAndEscapesText) {
  ArrayBuilder b;
  b.Add("plain").Add("with \"quote\"").Add("back\\slash").AddNull();
  EXPECT_EQ(b.Finish(), R"({"plain","with \"quote\"","back\\slash",NULL})");
  EXPECT_EQ(b.Finish(), "{}");
}

TEST(ArrayBuilderTest, EncodesByteaAsHex) {
  ArrayBuilder b;
  b.AddBytea(std::string("\x00\xff\x10", 3)).Add(int64_t{-7});
  EXPECT_EQ(b.Finish(), R"({"\\x00ff10",-7})");
}

}  // namespace
}  // namespace aijobs::pg
