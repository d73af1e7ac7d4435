#include "gateway/transcoding/route_table.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/api/annotations.pb.h"
#include "google/api/http.pb.h"

namespace aijobs::gateway {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::MethodDescriptor;

absl::Status MethodError(const MethodDescriptor* method, absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("google.api.http option of ", method->full_name(), ": ", what));
}

absl::Status CheckPathVariables(const MethodDescriptor* method, const PathTemplate& path) {
  for (const PathTemplate::Variable& var : path.variables()) {
    std::string name = absl::StrJoin(var.field_path, ".");
    auto fields = ResolveFieldPath(method->input_type(), var.field_path);
    if (!fields.ok()) {
      return MethodError(method, absl::StrCat("path \"", path.text(), "\" variable {", name,
                                              "}: ", fields.status().message()));
    }
    const FieldDescriptor* leaf = fields->back();
    if (leaf->is_repeated()) {
      return MethodError(method, absl::StrCat("path \"", path.text(), "\" variable {", name,
                                              "} names repeated field ", leaf->full_name(),
                                              "; path variables must be singular scalars"));
    }
    if (leaf->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      return MethodError(method, absl::StrCat("path \"", path.text(), "\" variable {", name,
                                              "} names message field ", leaf->full_name(),
                                              "; path variables must be scalars"));
    }
  }
  return absl::OkStatus();
}

absl::Status AddRule(const google::protobuf::ServiceDescriptor* service,
                     const MethodDescriptor* method, const google::api::HttpRule& rule, bool nested,
                     std::vector<Route>* routes) {
  Route route;
  std::string text;
  switch (rule.pattern_case()) {
    case google::api::HttpRule::kGet:
      route.http_method = "GET";
      text = rule.get();
      break;
    case google::api::HttpRule::kPut:
      route.http_method = "PUT";
      text = rule.put();
      break;
    case google::api::HttpRule::kPost:
      route.http_method = "POST";
      text = rule.post();
      break;
    case google::api::HttpRule::kDelete:
      route.http_method = "DELETE";
      text = rule.delete_();
      break;
    case google::api::HttpRule::kPatch:
      route.http_method = "PATCH";
      text = rule.patch();
      break;
    case google::api::HttpRule::kCustom:
      route.http_method = rule.custom().kind();
      text = rule.custom().path();
      if (route.http_method.empty()) return MethodError(method, "custom pattern without kind");
      break;
    case google::api::HttpRule::PATTERN_NOT_SET:
      return MethodError(method, "no HTTP method and path (get, post, put, patch, delete, custom)");
  }
  if (nested && rule.additional_bindings_size() > 0) {
    return MethodError(method, "additional_bindings may only be nested one level deep");
  }
  auto path = PathTemplate::Parse(text);
  if (!path.ok()) return MethodError(method, path.status().message());
  if (absl::Status s = CheckPathVariables(method, *path); !s.ok()) return s;
  route.path = *std::move(path);
  route.method = method;

  route.body = rule.body();
  if (!route.body.empty() && route.body != "*") {
    const FieldDescriptor* f = method->input_type()->FindFieldByName(route.body);
    if (f == nullptr) {
      return MethodError(method, absl::StrCat("body field \"", route.body, "\" does not exist in ",
                                              method->input_type()->full_name()));
    }
    if (f->is_repeated()) {
      return MethodError(method, absl::StrCat("body field \"", route.body,
                                              "\" is repeated; it must be a singular field"));
    }
  }
  if (!route.body.empty() && route.http_method == "GET") {
    return MethodError(
        method, absl::StrCat("GET ", text, " must not have a body (body: \"", route.body, "\")"));
  }
  route.response_body = rule.response_body();
  if (!route.response_body.empty() &&
      method->output_type()->FindFieldByName(route.response_body) == nullptr) {
    return MethodError(
        method, absl::StrCat("response_body field \"", route.response_body, "\" does not exist in ",
                             method->output_type()->full_name()));
  }
  route.grpc_path = absl::StrCat("/", service->full_name(), "/", method->name());
  route.label = absl::StrCat(route.http_method, " ", route.path.text());
  route.server_streaming = method->server_streaming();
  route.client_streaming = method->client_streaming();

  for (const Route& other : *routes) {
    if (other.http_method == route.http_method && other.path.text() == route.path.text()) {
      return MethodError(method, absl::StrCat(route.http_method, " ", text, " is already bound to ",
                                              other.method->full_name()));
    }
  }
  routes->push_back(std::move(route));
  for (const google::api::HttpRule& extra : rule.additional_bindings()) {
    if (absl::Status s = AddRule(service, method, extra, /*nested=*/true, routes); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<const FieldDescriptor*>> ResolveFieldPath(
    const Descriptor* message, const std::vector<std::string>& field_path) {
  std::vector<const FieldDescriptor*> out;
  const Descriptor* current = message;
  for (size_t i = 0; i < field_path.size(); ++i) {
    if (current == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("\"", field_path[i - 1],
                                                     "\" is not a message, so \"", field_path[i],
                                                     "\" cannot be selected in it"));
    }
    const FieldDescriptor* f = current->FindFieldByName(field_path[i]);
    if (f == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("field \"", field_path[i], "\" does not exist in ", current->full_name()));
    }
    if (i + 1 < field_path.size() && f->is_repeated()) {
      return absl::InvalidArgumentError(absl::StrCat("field \"", field_path[i],
                                                     "\" is repeated, so \"", field_path[i + 1],
                                                     "\" cannot be selected in it"));
    }
    out.push_back(f);
    current = f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE ? f->message_type() : nullptr;
  }
  if (out.empty()) return absl::InvalidArgumentError("empty field path");
  return out;
}

absl::StatusOr<RouteTable> RouteTable::FromServices(
    const std::vector<const google::protobuf::ServiceDescriptor*>& services) {
  RouteTable table;
  for (const google::protobuf::ServiceDescriptor* service : services) {
    if (service == nullptr) return absl::InvalidArgumentError("null service descriptor");
    for (int i = 0; i < service->method_count(); ++i) {
      const MethodDescriptor* method = service->method(i);
      if (!method->options().HasExtension(google::api::http)) continue;
      const google::api::HttpRule& rule = method->options().GetExtension(google::api::http);
      if (absl::Status s = AddRule(service, method, rule, /*nested=*/false, &table.routes_);
          !s.ok()) {
        return s;
      }
    }
  }
  return table;
}

absl::StatusOr<RouteTable::Match> RouteTable::Find(absl::string_view http_method,
                                                   absl::string_view path,
                                                   std::vector<std::string>* allowed) const {
  if (allowed != nullptr) allowed->clear();
  size_t q = path.find_first_of("?#");
  if (q != absl::string_view::npos) path = path.substr(0, q);

  std::vector<std::string> path_methods;
  const Route* best = nullptr;
  std::vector<VariableBinding> best_bindings;
  for (const Route& route : routes_) {
    bool method_ok = route.http_method == http_method || route.http_method == "*";
    // Once a route is found, only a more specific one with the right method can replace it
    // (and the allowed list is only needed when none is found).
    if (best != nullptr &&
        (!method_ok || route.path.literal_count() <= best->path.literal_count())) {
      continue;
    }
    std::optional<std::vector<VariableBinding>> bindings = route.path.Match(path);
    if (!bindings) continue;
    path_methods.push_back(route.http_method);
    if (!method_ok) continue;
    if (best == nullptr || route.path.literal_count() > best->path.literal_count()) {
      best = &route;
      best_bindings = *std::move(bindings);
    }
  }
  if (best != nullptr) return Match{best, std::move(best_bindings)};
  if (path_methods.empty()) {
    return absl::NotFoundError(absl::StrCat("no route for ", http_method, " ", path));
  }
  std::sort(path_methods.begin(), path_methods.end());
  path_methods.erase(std::unique(path_methods.begin(), path_methods.end()), path_methods.end());
  std::string list = absl::StrJoin(path_methods, ", ");
  if (allowed != nullptr) *allowed = std::move(path_methods);
  return absl::NotFoundError(
      absl::StrCat("method ", http_method, " is not allowed on ", path, " (allowed: ", list, ")"));
}

}  // namespace aijobs::gateway
