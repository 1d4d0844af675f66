// Prometheus scrape endpoint over HTTP/1.x (http_server.h).
#include "metrics/http_server.h"

#include "common/log.h"
#include "common/tcp_listener.h"

namespace mp::metrics {

struct HttpServer::Conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  HttpServer* server = nullptr;
  std::string head;
  bool done = false;
  int handles_open = 0;
  std::shared_ptr<Conn> self;
};

namespace {
constexpr size_t kMaxHead = 8192;
constexpr uint64_t kHeadTimeoutMs = 5000;
char g_buffer[8192];

struct WriteReq {
  uv_write_t req;
  std::string data;
  HttpServer::Conn* conn;
};

void on_handle_closed(uv_handle_t* h) {
  auto* c = static_cast<HttpServer::Conn*>(h->data);
  if (--c->handles_open == 0) c->self.reset();
}
}  // namespace

HttpServer::HttpServer(uv_loop_t* loop, Render render) : loop_(loop), render_(std::move(render)) {}
HttpServer::~HttpServer() = default;

bool HttpServer::listen(Endpoint where, std::string& error) {
  listening_ = true;
  std::string why;
  const bool ok = start_tcp_listener(
      loop_, &listener_, this, where, 64,
      [](uv_stream_t* l, int status) {
        auto* self = static_cast<HttpServer*>(l->data);
        if (status < 0) return;
        auto c = std::make_shared<Conn>();
        c->server = self;
        c->self = c;
        uv_tcp_init(self->loop_, &c->tcp);
        uv_timer_init(self->loop_, &c->timer);
        c->tcp.data = c.get();
        c->timer.data = c.get();
        c->handles_open = 2;
        self->conns_.insert(c);
        if (uv_accept(l, reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0) {
          self->finish(c.get());
          return;
        }
        uv_timer_start(
            &c->timer,
            [](uv_timer_t* t) {
              auto* conn = static_cast<Conn*>(t->data);
              conn->server->finish(conn);
            },
            kHeadTimeoutMs, 0);
        uv_read_start(
            reinterpret_cast<uv_stream_t*>(&c->tcp),
            [](uv_handle_t*, size_t, uv_buf_t* buf) {
              buf->base = g_buffer;
              buf->len = sizeof g_buffer;
            },
            [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
              auto* conn = static_cast<Conn*>(s->data);
              HttpServer* server = conn->server;
              if (conn->done) return;
              if (n < 0) {
                server->finish(conn);
                return;
              }
              conn->head.append(buf->base, static_cast<size_t>(n));
              size_t end = conn->head.find("\r\n\r\n");
              if (end == std::string::npos) end = conn->head.find("\n\n");
              if (end == std::string::npos) {
                if (conn->head.size() > kMaxHead)
                  server->respond(conn, 431, "Request Header Fields Too Large",
                                  "request head too large\n");
                return;
              }
              std::string line = conn->head.substr(0, conn->head.find_first_of("\r\n"));
              size_t sp1 = line.find(' ');
              size_t sp2 = line.find(' ', sp1 == std::string::npos ? sp1 : sp1 + 1);
              std::string method = line.substr(0, sp1);
              std::string path =
                  sp1 == std::string::npos ? "" : line.substr(sp1 + 1, sp2 - sp1 - 1);
              if (method != "GET" && method != "HEAD")
                server->respond(conn, 405, "Method Not Allowed", "only GET /metrics\n");
              else if (path != "/metrics" && path.rfind("/metrics?", 0) != 0)
                server->respond(conn, 404, "Not Found", "try /metrics\n");
              else
                server->respond(conn, 200, "OK", server->render_(), method == "HEAD");
            });
      },
      why);
  if (!ok) {
    error = "cannot listen for metrics scrapes on " + format_endpoint(where) + ": " + why;
    return false;
  }
  LOG_INFO("metrics: Prometheus endpoint http://%s/metrics", format_endpoint(where).c_str());
  return true;
}

void HttpServer::respond(Conn* c, int status, const char* reason, const std::string& body,
                         bool head_only) {
  c->done = true;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&c->tcp));
  auto* w = new WriteReq;
  w->conn = c;
  w->req.data = w;
  w->data = "HTTP/1.1 " + std::to_string(status) + " " + reason +
            "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: " +
            std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" +
            (head_only ? std::string() : body);  // HEAD: the headers GET would send, no body
  uv_buf_t b = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
  int r =
      uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&c->tcp), &b, 1, [](uv_write_t* req, int) {
        auto* wr = static_cast<WriteReq*>(req->data);
        HttpServer::Conn* conn = wr->conn;
        delete wr;
        conn->server->finish(conn);
      });
  if (r != 0) {
    delete w;
    finish(c);
  }
}

void HttpServer::finish(Conn* c) {
  if (!c->self || uv_is_closing(reinterpret_cast<uv_handle_t*>(&c->tcp))) return;
  conns_.erase(c->self);
  uv_timer_stop(&c->timer);
  uv_close(reinterpret_cast<uv_handle_t*>(&c->timer), on_handle_closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), on_handle_closed);
}

void HttpServer::close() {
  if (listening_) {
    uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
    listening_ = false;
  }
  std::vector<Conn*> all;
  for (const auto& c : conns_) all.push_back(c.get());
  for (Conn* c : all) finish(c);
}

}  // namespace mp::metrics
