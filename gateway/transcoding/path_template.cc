#include "gateway/transcoding/path_template.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace aijobs::gateway {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool IsIdentStart(char c) { return absl::ascii_isalpha(c) || c == '_'; }
bool IsIdentChar(char c) { return absl::ascii_isalnum(c) || c == '_'; }

// Recursive-descent parser over the template text; offsets in errors index `text_`.
class Parser {
 public:
  Parser(absl::string_view text, size_t end) : text_(text), end_(end) {}

  absl::Status Error(absl::string_view what, size_t offset) const {
    return absl::InvalidArgumentError(
        absl::StrCat("path template \"", text_, "\": ", what, " at offset ", offset));
  }

  bool AtEnd() const { return pos_ >= end_; }
  char Peek() const { return AtEnd() ? '\0' : text_[pos_]; }
  size_t pos() const { return pos_; }

  // Parses one segment that is not a variable; `in_variable` makes '}' a terminator.
  // Returns the literal text, or sets *single / *multi for "*" / "**".
  absl::Status PlainSegment(bool in_variable, std::string* literal, bool* single, bool* multi) {
    size_t start = pos_;
    *single = *multi = false;
    literal->clear();
    if (Peek() == '*') {
      ++pos_;
      if (Peek() == '*') {
        ++pos_;
        *multi = true;
      } else {
        *single = true;
      }
      if (!AtEnd() && Peek() != '/' && !(in_variable && Peek() == '}')) {
        return Error(absl::StrCat("unexpected '", std::string(1, Peek()), "' after '*'"), pos_);
      }
      return absl::OkStatus();
    }
    while (!AtEnd() && Peek() != '/' && !(in_variable && Peek() == '}')) {
      char c = Peek();
      if (c == '{') {
        return in_variable ? Error("nested variable", pos_)
                           : Error("unexpected '{' inside a literal segment", pos_);
      }
      if (c == '}' || c == '*' || c == '=' || c == '?' || c == '#') {
        return Error(absl::StrCat("unexpected '", std::string(1, c), "'"), pos_);
      }
      ++pos_;
    }
    if (pos_ == start) return Error("empty segment", start);
    *literal = std::string(text_.substr(start, pos_ - start));
    return absl::OkStatus();
  }

  absl::Status FieldPath(std::vector<std::string>* path) {
    while (true) {
      size_t start = pos_;
      if (!IsIdentStart(Peek())) {
        if (AtEnd()) return Error("unterminated variable", var_start_);
        return Error("expected a field name", pos_);
      }
      while (IsIdentChar(Peek())) ++pos_;
      path->emplace_back(text_.substr(start, pos_ - start));
      if (Peek() != '.') return absl::OkStatus();
      ++pos_;
    }
  }

  void set_var_start(size_t p) { var_start_ = p; }
  void Advance() { ++pos_; }

 private:
  absl::string_view text_;
  size_t end_;
  size_t pos_ = 1;
  size_t var_start_ = 0;
};

}  // namespace

std::optional<std::string> PercentDecode(absl::string_view in, bool keep_slash,
                                         bool plus_is_space) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else if (c != '%') {
      out.push_back(c);
    } else {
      if (i + 2 >= in.size()) return std::nullopt;
      int hi = HexValue(in[i + 1]);
      int lo = HexValue(in[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      char decoded = static_cast<char>(hi * 16 + lo);
      if (decoded == '/' && keep_slash) {
        out.append(in.data() + i, 3);
      } else {
        out.push_back(decoded);
      }
      i += 2;
    }
  }
  return out;
}

absl::StatusOr<PathTemplate> PathTemplate::Parse(absl::string_view text) {
  PathTemplate t;
  t.text_ = std::string(text);
  if (text.empty() || text[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("path template \"", text, "\": must start with '/' at offset 0"));
  }
  // The verb is the text after the last ':' that follows the last '/' and the last '}'
  // (a ':' inside a variable's segments or an earlier segment is a literal character).
  size_t end = text.size();
  size_t colon = text.rfind(':');
  if (colon != absl::string_view::npos) {
    size_t last_slash = text.rfind('/');
    size_t last_brace = text.rfind('}');
    if (colon > last_slash && (last_brace == absl::string_view::npos || colon > last_brace)) {
      absl::string_view verb = text.substr(colon + 1);
      for (size_t i = 0; i < verb.size(); ++i) {
        char c = verb[i];
        if (c == '{' || c == '*' || c == '=' || c == '?' || c == '#') {
          return absl::InvalidArgumentError(
              absl::StrCat("path template \"", text, "\": unexpected '", std::string(1, c),
                           "' in the verb at offset ", colon + 1 + i));
        }
      }
      if (verb.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("path template \"", text, "\": empty verb at offset ", colon));
      }
      t.verb_ = std::string(verb);
      end = colon;
    }
  }

  Parser p(text, end);
  std::vector<size_t> offsets;                // of each segment, for the "**" error
  if (end == 1 && t.verb_.empty()) return t;  // "/"
  while (true) {
    if (p.Peek() == '{') {
      size_t var_start = p.pos();
      p.set_var_start(var_start);
      p.Advance();
      Variable var;
      if (absl::Status s = p.FieldPath(&var.field_path); !s.ok()) return s;
      var.begin = t.segments_.size();
      if (p.Peek() == '=') {
        p.Advance();
        while (true) {
          if (p.AtEnd()) return p.Error("unterminated variable", var_start);
          if (p.Peek() == '{') return p.Error("nested variable", p.pos());
          Segment seg;
          bool single, multi;
          offsets.push_back(p.pos());
          if (absl::Status s = p.PlainSegment(true, &seg.literal, &single, &multi); !s.ok()) {
            return s;
          }
          seg.kind =
              multi ? SegmentKind::kMulti : (single ? SegmentKind::kSingle : SegmentKind::kLiteral);
          t.segments_.push_back(std::move(seg));
          if (p.Peek() == '/') {
            p.Advance();
            continue;
          }
          break;
        }
      } else {
        offsets.push_back(p.pos());
        t.segments_.push_back(Segment{SegmentKind::kSingle, ""});
      }
      if (p.AtEnd()) return p.Error("unterminated variable", var_start);
      if (p.Peek() != '}') {
        return p.Error(absl::StrCat("unexpected '", std::string(1, p.Peek()), "' in variable"),
                       p.pos());
      }
      p.Advance();
      var.end = t.segments_.size();
      for (const Variable& other : t.variables_) {
        if (other.field_path == var.field_path) {
          return p.Error(
              absl::StrCat("variable {", absl::StrJoin(var.field_path, "."), "} appears twice"),
              var_start);
        }
      }
      t.variables_.push_back(std::move(var));
    } else {
      Segment seg;
      bool single, multi;
      offsets.push_back(p.pos());
      if (absl::Status s = p.PlainSegment(false, &seg.literal, &single, &multi); !s.ok()) {
        return s;
      }
      seg.kind =
          multi ? SegmentKind::kMulti : (single ? SegmentKind::kSingle : SegmentKind::kLiteral);
      t.segments_.push_back(std::move(seg));
    }
    if (p.AtEnd()) break;
    if (p.Peek() != '/') {
      return p.Error(absl::StrCat("unexpected '", std::string(1, p.Peek()), "'"), p.pos());
    }
    p.Advance();
    if (p.AtEnd()) return p.Error("empty segment", p.pos());
  }
  for (size_t i = 0; i + 1 < t.segments_.size(); ++i) {
    if (t.segments_[i].kind == SegmentKind::kMulti) {
      return p.Error("'**' must be the last segment", offsets[i]);
    }
  }
  return t;
}

std::optional<std::vector<VariableBinding>> PathTemplate::Match(absl::string_view path) const {
  if (path.empty() || path[0] != '/') return std::nullopt;
  absl::string_view rest = path.substr(1);
  if (!verb_.empty()) {
    // The verb belongs to the last segment: "/v1/jobs/abc:cancel".
    if (rest.size() < verb_.size() + 1) return std::nullopt;
    absl::string_view suffix = rest.substr(rest.size() - verb_.size() - 1);
    if (suffix[0] != ':' || suffix.substr(1) != verb_) return std::nullopt;
    rest.remove_suffix(verb_.size() + 1);
    if (!rest.empty() && rest.back() == '/') return std::nullopt;  // "/v1/jobs/:cancel"
  }
  std::vector<absl::string_view> parts;
  if (!rest.empty()) parts = absl::StrSplit(rest, '/');

  // starts[i] = index in `parts` where template segment i begins; starts[n] = end.
  std::vector<size_t> starts(segments_.size() + 1);
  size_t j = 0;
  for (size_t i = 0; i < segments_.size(); ++i) {
    starts[i] = j;
    const Segment& seg = segments_[i];
    switch (seg.kind) {
      case SegmentKind::kMulti:
        j = parts.size();
        break;
      case SegmentKind::kSingle:
        if (j >= parts.size() || parts[j].empty()) return std::nullopt;
        ++j;
        break;
      case SegmentKind::kLiteral:
        if (j >= parts.size() || parts[j] != seg.literal) return std::nullopt;
        ++j;
        break;
    }
  }
  if (j != parts.size()) return std::nullopt;
  starts[segments_.size()] = j;

  std::vector<VariableBinding> bindings;
  bindings.reserve(variables_.size());
  for (const Variable& var : variables_) {
    bool single = var.end - var.begin == 1 && segments_[var.begin].kind != SegmentKind::kMulti;
    std::string raw =
        absl::StrJoin(parts.begin() + starts[var.begin], parts.begin() + starts[var.end], "/");
    std::optional<std::string> value = PercentDecode(raw, /*keep_slash=*/!single, false);
    if (!value) return std::nullopt;
    bindings.push_back(VariableBinding{var.field_path, *std::move(value)});
  }
  return bindings;
}

std::vector<std::vector<std::string>> PathTemplate::variable_field_paths() const {
  std::vector<std::vector<std::string>> out;
  out.reserve(variables_.size());
  for (const Variable& v : variables_) out.push_back(v.field_path);
  return out;
}

int PathTemplate::literal_count() const {
  int n = verb_.empty() ? 0 : 1;
  for (const Segment& s : segments_) n += s.kind == SegmentKind::kLiteral ? 1 : 0;
  return n;
}

std::string PathTemplate::OpenApiPath() const {
  std::string out;
  size_t i = 0;
  size_t v = 0;
  while (i < segments_.size()) {
    out.push_back('/');
    if (v < variables_.size() && variables_[v].begin == i) {
      absl::StrAppend(&out, "{", absl::StrJoin(variables_[v].field_path, "."), "}");
      i = variables_[v].end;
      ++v;
      continue;
    }
    const Segment& s = segments_[i];
    out +=
        s.kind == SegmentKind::kLiteral ? s.literal : (s.kind == SegmentKind::kSingle ? "*" : "**");
    ++i;
  }
  if (out.empty()) out = "/";
  if (!verb_.empty()) absl::StrAppend(&out, ":", verb_);
  return out;
}

}  // namespace aijobs::gateway
