#include "common/scheduler_target.h"

#include "gtest/gtest.h"

namespace aijobs {
namespace {

TEST(SchedulerTargetTest, OneAddressIsPassedThrough) {
  EXPECT_EQ(*SchedulerChannelTargetFromList("localhost:50051"), "localhost:50051");
  EXPECT_EQ(*SchedulerChannelTargetFromList(" dns:///sched.internal:50051 "),
            "dns:///sched.internal:50051");
  EXPECT_EQ(*SchedulerChannelTargetFromList("unix:/run/aijobs.sock"), "unix:/run/aijobs.sock");
}

TEST(SchedulerTargetTest, SeveralLiteralAddressesBecomeOneBalancedTarget) {
  EXPECT_EQ(*SchedulerChannelTargetFromList("10.0.0.1:50051, 10.0.0.2:50052"),
            "ipv4:10.0.0.1:50051,10.0.0.2:50052");
  EXPECT_EQ(*SchedulerChannelTargetFromList("[::1]:1,[fd00::2]:2"), "ipv6:[::1]:1,[fd00::2]:2");
  auto list = ParseSchedulerList("a:1,b:2");
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(*list, (std::vector<std::string>{"a:1", "b:2"}));
}

TEST(SchedulerTargetTest, BadListsSayWhatIsWrong) {
  for (const char* bad : {"", "a:1,,b:2", "10.0.0.1", "10.0.0.1:0", "10.0.0.1:70000", ":80",
                          "[::1:5"}) {
    auto t = SchedulerChannelTargetFromList(bad);
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  auto names = SchedulerChannelTargetFromList("sched-a:50051,sched-b:50051");
  ASSERT_FALSE(names.ok());
  EXPECT_NE(names.status().message().find("sched-a:50051"), std::string::npos);
  auto mixed = SchedulerChannelTargetFromList("10.0.0.1:1,[::1]:2");
  ASSERT_FALSE(mixed.ok());
  EXPECT_NE(mixed.status().message().find("mix"), std::string::npos);
}

}  // namespace
}  // namespace aijobs
