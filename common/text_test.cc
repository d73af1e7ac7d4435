#include "common/text.h"

#include <string>

#include "gtest/gtest.h"

namespace aijobs {
namespace {

TEST(TextTest, ValidUtf8) {
  EXPECT_TRUE(IsValidUtf8("plain"));
  EXPECT_TRUE(IsValidUtf8("caf\xc3\xa9 \xf0\x9f\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xff"));
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));          // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // past U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xe2\x82"));          // cut short
}

TEST(TextTest, ValidateTextNamesTheField) {
  EXPECT_TRUE(ValidateText("ok", "f").ok());
  EXPECT_EQ(ValidateText(std::string("a\0b", 3), "query parameter \"type\"").message(),
            "query parameter \"type\" must not contain NUL (\\u0000)");
  EXPECT_EQ(ValidateText("\xff", "path variable {job_id}").message(),
            "path variable {job_id} must be valid UTF-8");
}

// Regression (issue 10): the "not a UUID" message cut a UTF-8 character in two.
TEST(TextTest, Utf8PrefixNeverCutsACharacter) {
  EXPECT_EQ(Utf8Prefix("short", 64), "short");
  std::string s = std::string(63, 'a') + "\xc3\xa9" + "zz";  // the 2-byte char straddles 64
  EXPECT_EQ(Utf8Prefix(s, 64), std::string(63, 'a'));
  EXPECT_TRUE(IsValidUtf8(Utf8Prefix(s, 64)));
  EXPECT_EQ(Utf8Prefix(s, 65), std::string(63, 'a') + "\xc3\xa9");
}

}  // namespace
}  // namespace aijobs
