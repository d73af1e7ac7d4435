// Builds PostgreSQL array literals for text-format parameters, so one statement can carry
// a whole batch: `... FROM unnest($1::uuid[], $2::bytea[]) AS u(id, data)`.
//
//   pg::ArrayBuilder ids;
//   for (auto& job : batch) ids.Add(job.id);
//   params.Add(ids.Finish());   // {"a","b"}
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace aijobs::pg {

class ArrayBuilder {
 public:
  // Adds a text element, quoted and escaped.
  ArrayBuilder& Add(std::string_view text);
  ArrayBuilder& Add(int64_t value);
  // Adds a bytea element in hex form.
  ArrayBuilder& AddBytea(std::string_view bytes);
  ArrayBuilder& AddNull();
  // Returns the literal, e.g. {"a","b"}; the builder is then empty.
  std::string Finish();
  int size() const { return count_; }

 private:
  void Separator();
  std::string out_ = "{";
  int count_ = 0;
};

}  // namespace aijobs::pg
