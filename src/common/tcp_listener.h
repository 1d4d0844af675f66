// Starting a TCP listener on the event loop: the one sequence of init, bind
// and listen shared by the relay-link, management and metrics listeners.
#pragma once

#include <uv.h>

#include <string>

#include "common/address.h"

namespace mp {

// Initialises `handle` (its data set to `owner`), binds it to `where` and
// listens. False with `error` (libuv's text for the failure); the handle must
// be closed with uv_close() either way.
bool start_tcp_listener(uv_loop_t* loop, uv_tcp_t* handle, void* owner, const Endpoint& where,
                        int backlog, uv_connection_cb on_connection, std::string& error);

}  // namespace mp
