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

// The binary form of bytea[] (array_send): ndim, has-null flag, element type 17, then one
// dimension (count, lower bound 1) and each element as length + raw bytes (-1 for NULL).
TEST(ByteaArrayBuilderTest, EncodesBinaryArrayWithRawBytesAndNulls) {
  ByteaArrayBuilder b;
  b.Add(std::string("\x00\xff", 2)).AddNull().Add("");
  EXPECT_EQ(b.size(), 3);
  const std::string expected(
      "\0\0\0\1"          // ndim 1
      "\0\0\0\1"          // has nulls
      "\0\0\0\x11"        // element type bytea (17)
      "\0\0\0\3"          // 3 elements
      "\0\0\0\1"          // lower bound 1
      "\0\0\0\2\x00\xff"  // 2 raw bytes
      "\xff\xff\xff\xff"  // NULL
      "\0\0\0\0",         // empty
      34);
  EXPECT_EQ(b.Finish(), expected);
  EXPECT_EQ(b.size(), 0);
  // An empty array has no dimensions.
  EXPECT_EQ(b.Finish(), std::string("\0\0\0\0\0\0\0\0\0\0\0\x11", 12));
}

TEST(ByteaArrayBuilderTest, PayloadIsHalfTheHexForm) {
  std::string blob(1 << 16, '\x7f');
  ByteaArrayBuilder binary;
  ArrayBuilder hex;
  binary.Add(blob);
  hex.AddBytea(blob);
  EXPECT_LE(binary.Finish().size(), hex.Finish().size() / 2 + 32);
}

}  // namespace
}  // namespace aijobs::pg
