// Placeholder (issue #12): OpenSIPS MI / Kamailio JSON-RPC hang-up requests and replies.
