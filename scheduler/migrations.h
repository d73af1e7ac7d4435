// Versioned schema migrations, applied at start-up. Safe when several replicas start at
// once: a session-level advisory lock serialises them and each version is applied once.
//
//   ASSIGN_OR_RETURN(auto conn, pg::Connection::Open(url));
//   RETURN_IF_ERROR(ApplyMigrations(*conn));
#pragma once

#include "absl/status/status.h"
#include "common/pg/connection.h"

namespace aijobs::scheduler {

// Applies every migration not yet recorded in aijobs_schema_migrations, each in its own
// transaction. Returns the first error (the failed migration is rolled back).
absl::Status ApplyMigrations(pg::Connection& conn);

// The newest schema version this build knows.
int LatestSchemaVersion();

}  // namespace aijobs::scheduler
