// Implementation of tcp_listener.h.
#include "common/tcp_listener.h"

#include "common/error.h"

namespace mp {

bool start_tcp_listener(uv_loop_t* loop, uv_tcp_t* handle, void* owner, const Endpoint& where,
                        int backlog, uv_connection_cb on_connection, std::string& error) {
  uv_tcp_init(loop, handle);
  handle->data = owner;
  const sockaddr_in sa = where.to_sockaddr();
  int r = uv_tcp_bind(handle, reinterpret_cast<const sockaddr*>(&sa), 0);
  if (r == 0) r = uv_listen(reinterpret_cast<uv_stream_t*>(handle), backlog, on_connection);
  if (r != 0) return fail(error, uv_strerror(r));
  return true;
}

}  // namespace mp
