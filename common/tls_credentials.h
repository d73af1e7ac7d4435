// TLS for the scheduler's gRPC port, from PEM files, for the server and for every client
// (SDK users, aijobsctl, the worker, the gateway's upstream, aijobs-load).
//
//   auto creds = aijobs::ClientTlsCredentials({.ca_file = "ca.pem"});   // insecure when empty
//   auto server = aijobs::ServerTlsCredentials({.cert_file = "s.pem", .key_file = "s.key"});
#pragma once

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace aijobs {

struct TlsFiles {
  std::string ca_file;    // client: roots to verify the server (empty: the system's);
                          // server: CA whose client certificates are verified (mTLS)
  std::string cert_file;  // our certificate chain (server; client for mTLS)
  std::string key_file;   // its private key
};

// Insecure credentials when every field is empty; TLS otherwise (a client certificate when
// cert and key are given). INVALID_ARGUMENT naming the file that cannot be read, or when
// only one of cert and key is given.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ClientTlsCredentials(
    const TlsFiles& files);

// Insecure credentials when cert and key are empty; TLS otherwise. With a ca_file, client
// certificates are requested and, when presented, must be signed by that CA (a call without
// one is still served: it authenticates otherwise).
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerTlsCredentials(
    const TlsFiles& files);

}  // namespace aijobs
