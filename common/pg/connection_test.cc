// CodeForSqlState: the one place a PostgreSQL error class becomes a status code, which is
// what retry loops switch on (UNAVAILABLE/ABORTED/DEADLINE_EXCEEDED retry, the rest do not).
#include "common/pg/connection.h"

#include <gtest/gtest.h>

namespace aijobs::pg {
namespace {

using Code = absl::StatusCode;

TEST(CodeForSqlStateTest, MapsEachClassByWhatTheCallerShouldDo) {
  struct Case {
    const char* sqlstate;
    Code code;
  };
  for (const Case& c : {
           Case{"23505", Code::kAlreadyExists},       // unique_violation
           Case{"40001", Code::kAborted},             // serialization_failure
           Case{"40P01", Code::kAborted},             // deadlock_detected
           Case{"08000", Code::kUnavailable},         // connection_exception
           Case{"08006", Code::kUnavailable},         // connection_failure
           Case{"08P01", Code::kUnavailable},         // protocol_violation
           Case{"57014", Code::kDeadlineExceeded},    // query_canceled (statement_timeout)
           Case{"57P01", Code::kUnavailable},         // admin_shutdown
           Case{"57P02", Code::kUnavailable},         // crash_shutdown
           Case{"57P03", Code::kUnavailable},         // cannot_connect_now
           Case{"53000", Code::kUnavailable},         // insufficient_resources
           Case{"53100", Code::kUnavailable},         // disk_full
           Case{"53200", Code::kUnavailable},         // out_of_memory
           Case{"53300", Code::kUnavailable},         // too_many_connections
           Case{"54000", Code::kFailedPrecondition},  // program_limit_exceeded
           Case{"54001", Code::kFailedPrecondition},  // statement_too_complex
           Case{"22P02", Code::kInvalidArgument},     // invalid_text_representation
           Case{"22021", Code::kInvalidArgument},     // character_not_in_repertoire
           Case{"22001", Code::kInvalidArgument},     // string_data_right_truncation
           Case{"23502", Code::kInvalidArgument},     // not_null_violation
           Case{"42P01", Code::kInternal},            // undefined_table: our bug
           Case{"XX000", Code::kInternal},
           Case{"", Code::kInternal},
       }) {
    EXPECT_EQ(CodeForSqlState(c.sqlstate), c.code) << "SQLSTATE " << c.sqlstate;
  }
}

}  // namespace
}  // namespace aijobs::pg
