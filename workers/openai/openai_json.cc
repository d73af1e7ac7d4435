#include "workers/openai/openai_json.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/type.pb.h>
#include <google/protobuf/util/type_resolver.h>
#include <google/protobuf/util/type_resolver_util.h>

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace aijobs::openai {
namespace {

// protobuf's JsonStringToMessage resolves the target's types anew on every call: the
// generated pool's TypeResolver converts each Descriptor it is asked for into a
// google.protobuf.Type (a few dozen string copies per message type). This resolver converts
// each type once and hands out copies of the cached result; chunks are then parsed exactly as
// JsonStringToMessage does it (JsonToBinaryString, then ParseFromString), with the same
// options.
class CachingTypeResolver : public google::protobuf::util::TypeResolver {
 public:
  CachingTypeResolver()
      : base_(google::protobuf::util::NewTypeResolverForDescriptorPool(
            "type.googleapis.com", google::protobuf::DescriptorPool::generated_pool())) {}

  google::protobuf::util::Status ResolveMessageType(const std::string& type_url,
                                                    google::protobuf::Type* type) override {
    {
      absl::MutexLock lock(&mu_);
      if (auto it = types_.find(type_url); it != types_.end()) {
        *type = it->second;
        return google::protobuf::util::Status();
      }
    }
    google::protobuf::util::Status s = base_->ResolveMessageType(type_url, type);
    if (s.ok()) {
      absl::MutexLock lock(&mu_);
      types_.emplace(type_url, *type);
    }
    return s;
  }

  google::protobuf::util::Status ResolveEnumType(const std::string& type_url,
                                                 google::protobuf::Enum* enum_type) override {
    return base_->ResolveEnumType(type_url, enum_type);
  }

 private:
  const std::unique_ptr<google::protobuf::util::TypeResolver> base_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, google::protobuf::Type> types_ ABSL_GUARDED_BY(mu_);
};

google::protobuf::util::TypeResolver* ChunkTypeResolver() {
  static CachingTypeResolver* const resolver = new CachingTypeResolver();
  return resolver;
}

const std::string& ChunkTypeUrl() {
  static const std::string* const url = new std::string(
      absl::StrCat("type.googleapis.com/", ChatCompletionChunk::descriptor()->full_name()));
  return *url;
}

}  // namespace

google::protobuf::util::JsonParseOptions OpenAiJsonParseOptions() {
  google::protobuf::util::JsonParseOptions o;
  o.ignore_unknown_fields = true;
  return o;
}

google::protobuf::util::JsonPrintOptions OpenAiJsonPrintOptions() {
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  return o;
}

absl::Status ChunkDecoder::Decode(absl::string_view json, ChatCompletionChunk* chunk) {
  binary_.clear();  // keeps its capacity: no allocation per chunk once warm
  auto status = google::protobuf::util::JsonToBinaryString(
      ChunkTypeResolver(), ChunkTypeUrl(), google::protobuf::StringPiece(json.data(), json.size()),
      &binary_, OpenAiJsonParseOptions());
  if (!status.ok()) return absl::InvalidArgumentError(status.message().as_string());
  if (!chunk->ParseFromString(binary_)) {
    return absl::InvalidArgumentError("JSON transcoder produced invalid protobuf output.");
  }
  return absl::OkStatus();
}

}  // namespace aijobs::openai
