#include "server/tls_files.h"

#include <memory>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "absl/strings/str_cat.h"

namespace gla {

namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};

std::unique_ptr<BIO, BioFree> Bio(const std::string& pem) {
  return std::unique_ptr<BIO, BioFree>(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// OpenSSL's reason for the last failure on this thread (and the queue cleared).
std::string OpenSslReason() {
  const unsigned long e = ERR_peek_last_error();
  ERR_clear_error();
  const char* reason = e != 0 ? ERR_reason_error_string(e) : nullptr;
  return reason != nullptr ? reason : "unreadable";
}

}  // namespace

absl::Status CheckTlsKeyPair(const std::string& cert_pem, const std::string& cert_path, const std::string& key_pem,
                             const std::string& key_path) {
  if (cert_pem.size() > (64u << 20) || key_pem.size() > (64u << 20))
    return absl::InvalidArgumentError("--tls_cert / --tls_key: larger than 64 MiB");
  auto cert_bio = Bio(cert_pem);
  std::unique_ptr<X509, X509Free> cert(PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr));
  if (cert == nullptr)
    return absl::InvalidArgumentError(absl::StrCat("--tls_cert ", cert_path, ": no PEM certificate in it (", OpenSslReason(), ")"));
  auto key_bio = Bio(key_pem);
  // A null passphrase callback that refuses: an encrypted key is an error, never a prompt on stdin.
  std::unique_ptr<EVP_PKEY, KeyFree> key(
      PEM_read_bio_PrivateKey(key_bio.get(), nullptr, [](char*, int, int, void*) { return -1; }, nullptr));
  if (key == nullptr)
    return absl::InvalidArgumentError(absl::StrCat("--tls_key ", key_path, ": no usable PEM private key in it (",
                                                   OpenSslReason(), "; encrypted keys are not supported)"));
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat("--tls_key ", key_path, " is not the private key of --tls_cert ",
                                                   cert_path, " (the certificate and key do not match)"));
  }
  return absl::OkStatus();
}

absl::Status CheckCaBundle(const std::string& pem, const std::string& path) {
  auto bio = Bio(pem);
  int count = 0;
  while (true) {
    std::unique_ptr<X509, X509Free> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (cert == nullptr) break;
    ++count;
  }
  ERR_clear_error();  // the end of the bundle reads as an error
  if (count == 0) return absl::InvalidArgumentError(absl::StrCat("--tls_client_ca ", path, ": no PEM certificate in it"));
  return absl::OkStatus();
}

}  // namespace gla
