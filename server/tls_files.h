// The PEM contents of --tls_cert / --tls_key / --tls_client_ca, which glad's gRPC port and its HTTP
// port both serve, and their checks, made before gRPC sees them: gRPC only reports that the server
// could not start, and glad used to blame the port for a key that belongs to another certificate.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace gla {

// What a TLS listener serves: PEM text, not paths (credentials.h reads and checks the files).
struct TlsPems {
  std::string cert_chain;   // the server's certificate, then its chain
  std::string private_key;  // its key (unencrypted)
  std::string client_ca;    // CA bundle that client certificates must chain to; empty: none asked (not mutual TLS)
};

// OK when `cert_pem` holds a certificate, `key_pem` a private key, and the key is the
// certificate's; otherwise INVALID_ARGUMENT naming the file and what is wrong.
absl::Status CheckTlsKeyPair(const std::string& cert_pem, const std::string& cert_path, const std::string& key_pem,
                             const std::string& key_path);
// OK when `pem` holds at least one certificate and nothing that fails to parse.
absl::Status CheckCaBundle(const std::string& pem, const std::string& path);

}  // namespace gla
