// A minimal HTTP/1.x server for the Prometheus scrape endpoint.
//
// Owns the optional [Metrics] listener: it answers `GET /metrics` with the
// text exposition produced by a callback, 404 for other paths, 405 for other
// methods, and closes each connection after one answer. A request head is
// bounded to 8 KiB and must arrive within 5 seconds.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <unordered_set>

#include "common/address.h"

namespace mp::metrics {

class HttpServer {
 public:
  using Render = std::function<std::string()>;
  HttpServer(uv_loop_t* loop, Render render);
  ~HttpServer();

  bool listen(Endpoint where, std::string& error);
  void close();

  struct Conn;

 private:
  void respond(Conn* c, int status, const char* reason, const std::string& body,
               bool head_only = false);
  void finish(Conn* c);

  uv_loop_t* loop_;
  Render render_;
  uv_tcp_t listener_;
  bool listening_ = false;
  std::unordered_set<std::shared_ptr<Conn>> conns_;
};

}  // namespace mp::metrics
