// Writes the seed corpora of the fuzz targets: ordinary valid inputs for every route and
// parser feature, and the hostile probes of issue 10 (chunked trailers, deep JSON, NUL
// bytes, ambiguous framing, invalid UTF-8 and escapes, odd durations). Each seed is one file,
// fuzz/corpus/<target>/<name>; the big ones are built here rather than typed. Files already
// in the corpus that this program does not write (minimised findings) are left alone.
//
//   cmake --build build --target fuzz_seeds   # runs: fuzz_seed_gen <source>/fuzz/corpus
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "aijobs/v1/job_service.pb.h"

namespace {

namespace fs = std::filesystem;
using aijobs::v1::SubmitJobRequest;

constexpr char kId[] = "0b0e4a5e-3c1d-4f7a-9b2e-6d5c4b3a2f10";
constexpr char kChat[] =
    R"({"type":"chat","input":{"messages":[{"role":"user","content":"What is polymorphism?"}]}})";

fs::path g_root;
int g_written = 0;

void Write(absl::string_view target, absl::string_view name, absl::string_view bytes) {
  fs::path dir = g_root / std::string(target);
  fs::create_directories(dir);
  std::ofstream out(dir / std::string(name), std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) {
    std::fprintf(stderr, "cannot write %s/%s\n", dir.c_str(), std::string(name).c_str());
    std::exit(1);
  }
  ++g_written;
}

// ---- gateway_request: raw bytes of one connection ----

std::string Post(absl::string_view path, absl::string_view body, absl::string_view headers = "") {
  return absl::StrCat("POST ", path, " HTTP/1.1\r\nHost: localhost\r\n",
                      "Content-Type: application/json\r\n", headers,
                      "Content-Length: ", body.size(), "\r\n\r\n", body);
}

std::string Get(absl::string_view target, absl::string_view headers = "") {
  return absl::StrCat("GET ", target, " HTTP/1.1\r\nHost: localhost\r\n", headers, "\r\n");
}

// `body` in one chunk, then the last chunk with `trailers` ("Name: value\r\n" each).
std::string Chunked(absl::string_view path, absl::string_view body, absl::string_view trailers) {
  std::string raw = absl::StrCat("POST ", path,
                                 " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                 "Transfer-Encoding: chunked\r\n\r\n");
  if (!body.empty()) absl::StrAppend(&raw, absl::Hex(body.size()), "\r\n", body, "\r\n");
  absl::StrAppend(&raw, "0\r\n", trailers, "\r\n");
  return raw;
}

std::string Repeat(absl::string_view s, int n) {
  std::string out;
  out.reserve(s.size() * n);
  for (int i = 0; i < n; ++i) out.append(s.data(), s.size());
  return out;
}

// A chat submit whose input holds {"x": <lists nested `depth` deep>}.
std::string DeepLists(int depth) {
  return absl::StrCat(R"({"type":"chat","input":{"x":)", Repeat("[", depth), Repeat("]", depth),
                      "}}");
}

// A chat submit whose input holds objects nested `depth` deep: {"a":{"a":...{}}}.
std::string DeepObjects(int depth) {
  return absl::StrCat(R"({"type":"chat","input":)", Repeat(R"({"a":)", depth - 1), "{}",
                      Repeat("}", depth - 1), "}");
}

void GatewaySeeds() {
  const absl::string_view t = "gateway_request";
  const std::string job = absl::StrCat("/v1/jobs/", kId);
  // Every route, valid.
  Write(t, "submit_chat", Post("/v1/jobs", kChat));
  Write(t, "submit_full",
        Post("/v1/jobs",
             R"({"type":"chat","input":{"messages":[{"role":"system","content":"be brief"},)"
             R"({"role":"user","content":"hi"}],"model":"sim"},"priority":5,"maxAttempts":2,)"
             R"("idempotencyKey":"order-42","labels":{"team":"search","env":"dev"},)"
             R"("timeout":"30s","cache":{"ttl":"3600s"}})",
             "X-Request-Id: req-1\r\nGrpc-Timeout: 5S\r\nAuthorization: Bearer t0k3n\r\n"
             "Grpc-Metadata-tenant: acme\r\ntraceparent: "
             "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"));
  Write(t, "submit_proto_names",
        Post("/v1/jobs",
             R"({"type":"embed","input":{"texts":["a","b"]},"max_attempts":1,)"
             R"("idempotency_key":"k","priority":-3})"));
  Write(t, "submit_json_suffix_type",
        absl::StrCat("POST /v1/jobs HTTP/1.1\r\nHost: x\r\n"
                     "Content-Type: application/merge-patch+json; charset=utf-8\r\n"
                     "Content-Length: ",
                     sizeof(kChat) - 1, "\r\n\r\n", kChat));
  Write(t, "submit_chunked",
        absl::StrCat("POST /v1/jobs HTTP/1.1\r\nHost: x\r\n"
                     "Content-Type: application/json; charset=utf-8\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n"
                     "10;ext=1\r\n",
                     absl::string_view(kChat).substr(0, 16), "\r\n",
                     absl::Hex(sizeof(kChat) - 17), "\r\n", absl::string_view(kChat).substr(16),
                     "\r\n0\r\n\r\n"));
  Write(t, "submit_expect_continue", Post("/v1/jobs", kChat, "Expect: 100-continue\r\n"));
  Write(t, "get_job", Get(job));
  Write(t, "get_job_http10", absl::StrCat("GET ", job, " HTTP/1.0\r\n\r\n"));
  Write(t, "list_jobs",
        Get(absl::StrCat("/v1/jobs?state=QUEUED&type=chat&pageSize=10&pageToken=1700000000000000.",
                         kId)));
  Write(t, "list_jobs_proto_names", Get("/v1/jobs?page_size=5&state=2&type=embed"));
  Write(t, "watch_sse", Get(absl::StrCat(job, "/events"),
                            "Accept: text/event-stream\r\nLast-Event-ID: 5\r\n"));
  Write(t, "watch_ndjson_query", Get(absl::StrCat(job, "/events?last_event_id=3&afterSeq=1")));
  Write(t, "cancel", Post(absl::StrCat(job, ":cancel"), R"({"reason":"user asked"})"));
  Write(t, "retry", Post(absl::StrCat(job, ":retry"), "{}"));
  Write(t, "cache_put",
        Post("/v1/cache",
             R"({"type":"chat","input":{"messages":[{"role":"user","content":"hi"}]},)"
             R"("result":{"text":"hello"},"ttl":"3600s"})"));
  Write(t, "options_preflight",
        absl::StrCat("OPTIONS /v1/jobs HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n"
                     "Access-Control-Request-Method: POST\r\n"
                     "Access-Control-Request-Headers: content-type\r\n\r\n"));
  Write(t, "options_plain", absl::StrCat("OPTIONS ", job, " HTTP/1.1\r\nHost: x\r\n\r\n"));
  Write(t, "method_not_allowed", absl::StrCat("DELETE ", job, " HTTP/1.1\r\nHost: x\r\n\r\n"));
  Write(t, "no_content_type",
        absl::StrCat("POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: ", sizeof(kChat) - 1,
                     "\r\n\r\n", kChat));
  Write(t, "unknown_route", Get("/v2/things"));
  Write(t, "healthz", Get("/healthz", "X-Request-Id: probe\r\n"));
  Write(t, "pipelined",
        absl::StrCat(Get(job), Post("/v1/jobs", kChat), Get("/v1/jobs?pageSize=1"),
                     Get(absl::StrCat(job, "/events"), "Connection: close\r\n"),
                     Get("/healthz")));

  // 1. Trailers: a field value over 65,535 bytes; fields that would steer the call.
  Write(t, "p1_trailer_value_70000",
        absl::StrCat("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: ",
                     std::string(70000, 'a'), "\r\n\r\n"));
  Write(t, "p1_trailer_value_70000_submit",
        Chunked("/v1/jobs", kChat, absl::StrCat("X: ", std::string(70000, 'a'), "\r\n")));
  Write(t, "p1_trailers_steering",
        Chunked("/v1/jobs", kChat,
                "X-Request-Id: from-trailer\r\nGrpc-Timeout: 1n\r\n"
                "Authorization: Bearer evil\r\nGrpc-Metadata-foo: bar\r\n"));
  std::string many;
  for (int i = 0; many.size() < 20000; ++i) {
    absl::StrAppend(&many, "X-Pad-", i, ": ", std::string(100, 'p'), "\r\n");
  }
  Write(t, "p1_trailers_over_budget", Chunked("/v1/jobs", kChat, many));

  // 2. Deep JSON: 20,000 and 40 nested lists, objects 100 deep, and the limit's edge (the
  // body is level 1, input 2: 30 lists reach 32 levels, 31 one more).
  Write(t, "p2_lists_20000", Post("/v1/jobs", DeepLists(20000)));
  Write(t, "p2_lists_40", Post("/v1/jobs", DeepLists(40)));
  Write(t, "p2_lists_30_at_limit", Post("/v1/jobs", DeepLists(30)));
  Write(t, "p2_lists_31_over_limit", Post("/v1/jobs", DeepLists(31)));
  Write(t, "p2_objects_100", Post("/v1/jobs", DeepObjects(100)));
  Write(t, "p2_brackets_in_strings",
        Post("/v1/jobs", absl::StrCat(R"({"type":"chat","input":{"s":")", Repeat("[{\\\"", 500),
                                      R"("}})")));

  // 3. NUL in idempotencyKey, labels and type.
  Write(t, "p3_nul_idempotency_key",
        Post("/v1/jobs", R"({"type":"chat","idempotencyKey":"a\u0000b","input":{}})"));
  Write(t, "p3_nul_label_key",
        Post("/v1/jobs", R"({"type":"chat","labels":{"k\u0000":"v"},"input":{}})"));
  Write(t, "p3_nul_label_value",
        Post("/v1/jobs", R"({"type":"chat","labels":{"k":"v\u0000"},"input":{}})"));
  Write(t, "p3_nul_type", Post("/v1/jobs", R"({"type":"chat\u0000x","input":{}})"));
  Write(t, "p3_nul_raw_in_body", Post("/v1/jobs", std::string("{\"type\":\"ch\0at\"}", 16)));

  // 4. Framing: gzip without chunked (then a smuggled request), xchunked with a length,
  // HTTP/1.1 without Host, two Hosts, and the other Transfer-Encoding refusals.
  Write(t, "p4_te_gzip_then_request",
        "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"
        "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  Write(t, "p4_te_xchunked_with_length",
        absl::StrCat("POST /v1/jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n"
                     "Content-Type: application/json\r\nContent-Length: ",
                     sizeof(kChat) - 1, "\r\n\r\n", kChat));
  Write(t, "p4_no_host", absl::StrCat("GET ", job, " HTTP/1.1\r\n\r\n"));
  Write(t, "p4_two_hosts", absl::StrCat("GET ", job, " HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"));
  Write(t, "p4_te_gzip_chunked",
        "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n");
  Write(t, "p4_te_chunked_twice",
        "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
  Write(t, "p4_te_chunked_params",
        "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked;x=1\r\n\r\n0\r\n\r\n");
  Write(t, "p4_te_http10", "POST /v1/jobs HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
  Write(t, "p4_te_and_length",
        absl::StrCat("POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
                     absl::Hex(sizeof(kChat) - 1), "\r\n", kChat, "\r\n0\r\n\r\n"));
  Write(t, "p4_body_over_limit",
        "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 1048577\r\n\r\n{}");

  // 5. Invalid UTF-8 and escapes in path and query; page tokens.
  Write(t, "p5_path_ff", Get("/v1/jobs/%ff"));
  Write(t, "p5_path_ff_cancel", Post("/v1/jobs/%ff:cancel", "{}"));
  Write(t, "p5_path_bad_escape", Get("/v1/jobs/%zz"));
  Write(t, "p5_path_nul_slash", Get("/v1/jobs/a%00b%2Fc/events"));
  Write(t, "p5_query_nul", Get("/v1/jobs?type=chat%00x"));
  Write(t, "p5_query_ff", Get("/v1/jobs?type=%ff%fe&state=%"));
  Write(t, "p5_page_token_9k", Get(absl::StrCat("/v1/jobs?pageToken=", std::string(9 * 1024, 'A'))));
  Write(t, "p5_page_token_negative_micros",
        Get(absl::StrCat("/v1/jobs?pageToken=-1700000000000000.", kId)));
  Write(t, "p5_last_event_id_negative",
        Get(absl::StrCat(job, "/events"), "Accept: text/event-stream\r\nLast-Event-ID: -1\r\n"));

  // 6. Duplicate keys and extreme durations.
  Write(t, "p6_duplicate_input",
        Post("/v1/jobs",
             R"({"type":"chat","input":{"messages":[{"role":"user","content":"a"}]},)"
             R"("input":{"messages":[{"role":"user","content":"b"}]}})"));
  Write(t, "p6_timeout_315576000000s",
        Post("/v1/jobs", absl::StrCat(absl::string_view(kChat, sizeof(kChat) - 2),
                                      R"(,"timeout":"315576000000s"})")));
  Write(t, "p6_timeout_1ns",
        Post("/v1/jobs", absl::StrCat(absl::string_view(kChat, sizeof(kChat) - 2),
                                      R"(,"timeout":"0.000000001s"})")));
  Write(t, "p6_timeout_negative",
        Post("/v1/jobs", absl::StrCat(absl::string_view(kChat, sizeof(kChat) - 2),
                                      R"(,"timeout":"-5s","cache":{"ttl":"999999999999s"}})")));
}

// ---- path_template: "<template>\n<path>", or a path alone ----

void PathTemplateSeeds() {
  const absl::string_view t = "path_template";
  struct Seed {
    const char* name;
    const char* text;
  };
  const Seed seeds[] = {
      {"jobs", "/v1/jobs\n/v1/jobs"},
      {"job", "/v1/jobs/{job_id}\n/v1/jobs/abc"},
      {"events", "/v1/jobs/{job_id}/events\n/v1/jobs/abc/events"},
      {"cancel_verb", "/v1/jobs/{job_id}:cancel\n/v1/jobs/abc:cancel"},
      {"nested_field", "/v1/messages/{message_id}/{sub.subfield}\n/v1/messages/1/foo"},
      {"multi_segment", "/v1/{name=shelves/*/books/*}\n/v1/shelves/1/books/2"},
      {"double_star_verb", "/v1/{name=**}:undelete\n/v1/a/b%2Fc/d:undelete"},
      {"double_star", "/v1/**\n/v1/x/y/z"},
      {"mixed", "/{a}/{b=c/**}\n/x/c/y/z"},
      {"root", "/\n/"},
      {"escapes", "/v1/jobs/{job_id}\n/v1/jobs/%41%2f%2F%00"},
      {"escape_ff", "/v1/jobs/{job_id}\n/v1/jobs/%ff"},
      {"escape_truncated", "/v1/jobs/{job_id}\n/v1/jobs/%4"},
      {"empty_segment", "/v1/jobs/{job_id}\n/v1/jobs/"},
      {"verb_only", "/v1/jobs/{job_id}:cancel\n/v1/jobs/:cancel"},
      {"bad_unterminated", "/v1/{x"},
      {"bad_no_slash", "v1/x"},
      {"bad_duplicate_var", "/v1/{x}/{x}"},
      {"bad_double_star_mid", "/v1/{a=**}/b"},
      {"bad_two_double_stars", "/v1/**/**"},
      {"bad_empty_verb", "/v1/x:"},
      {"bad_field_path", "/v1/{a.}"},
      {"bad_empty_field", "/v1/{=*}"},
      {"bad_nested_var", "/v1/{a={b}}"},
      {"path_only_cancel", "/v1/jobs/abc:cancel"},
      {"path_only_escapes", "/v1/jobs/%2e%2e%2F%ff/events"},
      {"path_only_plus", "/v1/jobs/a+b%20c"},
  };
  for (const Seed& s : seeds) Write(t, s.name, s.text);
  Write(t, "long_path", absl::StrCat("/v1/{name=**}\n/v1", Repeat("/segment", 1000)));
}

// ---- sse_parser: one event stream ----

void SseSeeds() {
  const absl::string_view t = "sse_parser";
  Write(t, "simple", "data: hello\n\n");
  Write(t, "gateway_frame",
        "event: output_delta\nid: 7\ndata: {\"jobId\":\"x\",\"seq\":\"7\",\"outputDelta\":"
        "{\"attempt\":1,\"text\":\"hi\"}}\n\n: ping\n\n");
  Write(t, "multiline_data", "data: one\ndata: two\ndata:\ndata: three\n\n");
  Write(t, "retry", "retry: 1500\ndata: x\n\nretry: abc\nretry: 99999999999999999999\n\n");
  Write(t, "crlf", "event: a\r\ndata: 1\r\n\r\ndata: 2\r\n\r\n");
  Write(t, "cr_only", "data: a\r\rdata: b\r\r");
  Write(t, "partial", "data: par");
  Write(t, "partial_after_data", "data: done\n\ndata: cut");
  Write(t, "bom", "\xEF\xBB\xBF" "data: x\n\n");
  Write(t, "bom_partial", "\xEF\xBB");
  Write(t, "comments", ": ping\n\n:\n\n");
  Write(t, "id_persists", "id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\n");
  Write(t, "id_with_nul", std::string("id: a\0b\ndata: x\n\n", 17));
  Write(t, "no_space_and_bare_fields", "data:x\n\ndata\n\nevent\ndata\n\nfoo: bar\n\n");
  Write(t, "event_without_data", "event: lonely\n\nevent: x\ndata: y\n\n");
  Write(t, "openai_stream",
        "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n"
        "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n"
        "data: [DONE]\n\n");
  Write(t, "long_line", absl::StrCat("data: ", std::string(4096, 'x'), "\n\n"));
  Write(t, "mixed_line_ends", "data: a\r\n\ndata: b\n\r\ndata: c\r\r\n\n");
}

// ---- submit_validation: serialized SubmitJobRequest ----

SubmitJobRequest Chat() {
  SubmitJobRequest r;
  r.set_type("chat");
  auto* m = (*r.mutable_input()->mutable_fields())["messages"].mutable_list_value()->add_values();
  (*m->mutable_struct_value()->mutable_fields())["role"].set_string_value("user");
  (*m->mutable_struct_value()->mutable_fields())["content"].set_string_value("hi");
  return r;
}

// `depth` lists nested inside input.x.
SubmitJobRequest NestedLists(int depth) {
  SubmitJobRequest r = Chat();
  google::protobuf::Value* v = &(*r.mutable_input()->mutable_fields())["x"];
  for (int i = 0; i < depth; ++i) v = v->mutable_list_value()->add_values();
  v->set_number_value(1);
  return r;
}

// Objects nested `depth` deep inside input (input is level 1).
SubmitJobRequest NestedObjects(int depth) {
  SubmitJobRequest r = Chat();
  google::protobuf::Struct* s = r.mutable_input();
  for (int i = 1; i < depth; ++i) s = (*s->mutable_fields())["a"].mutable_struct_value();
  return r;
}

void SubmitSeeds() {
  const absl::string_view t = "submit_validation";
  auto put = [&](absl::string_view name, const google::protobuf::Message& m) {
    Write(t, name, m.SerializeAsString());
  };
  SubmitJobRequest r = Chat();
  put("chat", r);
  r.set_priority(5);
  r.set_max_attempts(3);
  r.set_idempotency_key("order-42");
  (*r.mutable_labels())["team"] = "search";
  r.mutable_timeout()->set_seconds(30);
  r.mutable_cache()->mutable_ttl()->set_seconds(3600);
  put("chat_full", r);

  SubmitJobRequest embed;
  embed.set_type("embed");
  auto* texts = (*embed.mutable_input()->mutable_fields())["texts"].mutable_list_value();
  texts->add_values()->set_string_value("a");
  texts->add_values()->set_number_value(2);
  put("embed_non_string", embed);
  SubmitJobRequest other;
  other.set_type("summarize");
  (*other.mutable_input()->mutable_fields())["text"].set_string_value("long text");
  put("summarize", other);
  other.set_type("no-such-type");
  put("unknown_type", other);
  other.set_type("bad type!");
  put("invalid_type_name", other);
  other.set_type(std::string(65, 't'));
  put("type_65_chars", other);
  put("empty", SubmitJobRequest());

  // 3. NUL in type, labels and idempotency key (valid UTF-8, so they parse).
  r = Chat();
  r.set_type(std::string("chat\0x", 6));
  put("nul_type", r);
  r = Chat();
  (*r.mutable_labels())[std::string("k\0", 2)] = "v";
  put("nul_label_key", r);
  r = Chat();
  (*r.mutable_labels())["k"] = std::string("v\0", 2);
  put("nul_label_value", r);
  r = Chat();
  r.set_idempotency_key(std::string("a\0b", 3));
  put("nul_idempotency_key", r);
  r = Chat();
  r.set_idempotency_key(std::string(257, 'k'));
  put("idempotency_key_257", r);
  r = Chat();
  for (int i = 0; i < 200; ++i) (*r.mutable_labels())[absl::StrCat("k", i)] = std::string(80, 'v');
  put("labels_over_size", r);

  // 6. Durations and attempts at and past their limits.
  r = Chat();
  r.mutable_timeout()->set_seconds(315576000000);
  put("timeout_315576000000s", r);
  r = Chat();
  r.mutable_timeout()->set_nanos(1);
  put("timeout_1ns", r);
  r = Chat();
  r.mutable_timeout()->set_seconds(-1);
  r.mutable_timeout()->set_nanos(-5);
  put("timeout_negative", r);
  r = Chat();
  r.mutable_timeout()->set_seconds(INT64_MAX);
  r.mutable_timeout()->set_nanos(999999999);
  put("timeout_int64_max", r);
  r = Chat();
  r.mutable_cache()->mutable_ttl()->set_seconds(31 * 86400);
  put("cache_ttl_31_days", r);
  r = Chat();
  r.set_max_attempts(-1);
  put("max_attempts_negative", r);
  r = Chat();
  r.set_max_attempts(101);
  put("max_attempts_101", r);

  // 2. Nesting: lists 40 deep, objects at and past the limit of 32, and deeper than
  // protobuf's parser takes (it refuses more than 100 nested messages).
  put("lists_40", NestedLists(40));
  put("lists_31", NestedLists(31));
  put("objects_32", NestedObjects(32));
  put("objects_33", NestedObjects(33));
  put("objects_100_unparsable", NestedObjects(100));

  // Hand-made wire bytes: invalid UTF-8 in type (proto3 parsing refuses it), a truncated
  // field, and a PutCachedResultRequest (type, input, result, ttl).
  Write(t, "wire_invalid_utf8_type", std::string("\x0a\x02\xff\xfe", 4));
  Write(t, "wire_truncated", std::string("\x0a\x10" "chat", 6));
  aijobs::v1::PutCachedResultRequest cached;
  cached.set_type("chat");
  *cached.mutable_input() = Chat().input();
  (*cached.mutable_result()->mutable_fields())["text"].set_string_value("hello");
  cached.mutable_ttl()->set_seconds(3600);
  put("put_cached_result", cached);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <fuzz/corpus dir>\n", argv[0]);
    return 2;
  }
  g_root = argv[1];
  GatewaySeeds();
  PathTemplateSeeds();
  SseSeeds();
  SubmitSeeds();
  std::printf("wrote %d seeds under %s\n", g_written, g_root.c_str());
  return 0;
}
