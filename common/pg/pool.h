// A fixed-size pool of Connections shared by threads.
//
//   pg::Pool pool(conninfo, 8);
//   ASSIGN_OR_RETURN(pg::Pool::Lease conn, pool.Acquire(absl::Seconds(5)));
//   conn->ExecPrepared(...);   // returned to the pool when `conn` goes out of scope
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/pg/connection.h"

namespace aijobs::pg {

class Pool {
 public:
  // Borrowed connection; goes back to the pool on destruction (or is dropped if broken).
  class Lease {
   public:
    Lease(Pool* pool, std::unique_ptr<Connection> conn) : pool_(pool), conn_(std::move(conn)) {}
    Lease(Lease&&) noexcept = default;
    Lease& operator=(Lease&&) noexcept = default;
    ~Lease();
    Connection* operator->() const { return conn_.get(); }
    Connection& operator*() const { return *conn_; }

   private:
    Pool* pool_;
    std::unique_ptr<Connection> conn_;
  };

  // Opens connections lazily, at most `size` at once.
  // `transaction_pooler`: see Connection::Open.
  Pool(std::string conninfo, int size, int statement_timeout_ms = 30000,
       bool synchronous_commit = true, bool transaction_pooler = false);

  // Waits up to `timeout` for a free connection; opens one if the pool is not full.
  // UNAVAILABLE when the database can't be reached, DEADLINE_EXCEEDED on timeout.
  absl::StatusOr<Lease> Acquire(absl::Duration timeout = absl::Seconds(10));

  const std::string& conninfo() const { return conninfo_; }

 private:
  void Release(std::unique_ptr<Connection> conn);

  const std::string conninfo_;
  const int size_;
  const int statement_timeout_ms_;
  const bool synchronous_commit_;
  const bool transaction_pooler_;
  absl::Mutex mu_;
  std::vector<std::unique_ptr<Connection>> idle_ ABSL_GUARDED_BY(mu_);
  int open_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace aijobs::pg
