#include "server/call_interceptor.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/grpc_admission.h"
#include "server/grpc_status.h"

namespace gla {

namespace {

using grpc::experimental::InterceptionHookPoints;

class CallInterceptor : public grpc::experimental::Interceptor {
 public:
  CallInterceptor(const RequestGuard* guard, const char* method, bool single_request)
      : guard_(guard), method_(method ? method : ""), single_request_(single_request) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* m) override {
    if (m->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_INITIAL_METADATA) && guard_ != nullptr &&
        !absl::StartsWith(method_, "/grpc.health.v1.Health/")) {
      if (const auto* md = m->GetRecvInitialMetadata(); md != nullptr) token_error_ = guard_->Authenticate(AuthorizationOf(*md));
    }
    // On a call with one request message, the pointer is null when its bytes did not
    // deserialize (on a client stream, null is also the stream's normal end).
    if (single_request_ && m->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE) &&
        m->GetRecvMessage() == nullptr)
      unparsed_ = true;
    if (m->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS) && unparsed_) {
      if (!token_error_.ok()) {
        m->ModifySendStatus(ToGrpcStatus(token_error_));  // UNAUTHENTICATED, as Authenticate says
      } else {
        m->ModifySendStatus(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                         absl::StrCat("the request bytes do not parse as the message ", method_,
                                                      " takes (a protobuf of another type, or truncated)")));
      }
    }
    m->Proceed();
  }

 private:
  const RequestGuard* guard_;
  std::string method_;
  bool single_request_;
  absl::Status token_error_;
  bool unparsed_ = false;
};

}  // namespace

grpc::experimental::Interceptor* CallInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  using Type = grpc::experimental::ServerRpcInfo::Type;
  return new CallInterceptor(guard_, info->method(), info->type() == Type::UNARY || info->type() == Type::SERVER_STREAMING);
}

}  // namespace gla
