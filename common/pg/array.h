// Builds PostgreSQL array parameters (text literals, and binary bytea[]), so one statement can
// carry a whole batch: `... FROM unnest($1::uuid[], $2::bytea[]) AS u(id, data)`.
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

// Builds a bytea[] parameter in PostgreSQL's binary array format, to pass with
// Params::AddBinary: elements travel as raw bytes, half the size of the hex text form and
// with no escaping.
//
//   pg::ByteaArrayBuilder payloads;
//   for (auto& row : batch) payloads.Add(row.bytes);
//   params.AddBinary(payloads.Finish());   // for `$4::bytea[]`
class ByteaArrayBuilder {
 public:
  ByteaArrayBuilder& Add(std::string_view bytes);
  ByteaArrayBuilder& AddNull();
  // Returns the encoded array; the builder is then empty.
  std::string Finish();
  int size() const { return count_; }

 private:
  std::string elements_;
  int count_ = 0;
  bool has_null_ = false;
};

}  // namespace aijobs::pg
