/*
 * example.c - the complete example of mediaproxy-shim(3): a proxy-side
 * program that checks a REGISTER-style message for NAT, fixes its Contact,
 * relays the media of an INVITE through the dispatcher and ends the session.
 * Build: cc example.c $(pkg-config --cflags --libs mediaproxy-shim)
 * Run:   ./a.out [/run/mediaproxy/dispatcher.sock]
 */
#include <mediaproxy-shim.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char** argv) {
  /* NAT helpers: no dispatcher needed */
  mpshim_nat_info nat;
  mpshim_nat_info_init(&nat);
  nat.contact = "\"Alice\" <sip:alice@192.168.1.10:5062;transport=udp>;expires=600";
  nat.via = "SIP/2.0/UDP 192.168.1.10:5062;branch=z9hG4bK776asdhds;rport";
  nat.source_ip = "203.0.113.7";
  nat.source_port = 40123;
  int found = mpshim_client_nat_test(
      &nat, MPSHIM_NAT_PRIVATE_CONTACT | MPSHIM_NAT_SOURCE_ADDRESS | MPSHIM_NAT_PRIVATE_VIA);
  printf("client_nat_test: %d\n", found);
  if (found > 0) {
    char* contact = NULL;
    if (mpshim_fix_contact(&nat, &contact, NULL) == MPSHIM_OK) {
      printf("fixed Contact: %s\n", contact);
      mpshim_free(contact);
    }
  }

  /* one client per process (or per thread), created once */
  mpshim_config cfg;
  mpshim_config_init(&cfg);
  if (argc > 1) cfg.socket_path = argv[1];
  cfg.timeout_ms = 500;
  cfg.ice_candidate = MPSHIM_ICE_LOW;
  mpshim_client* mp = mpshim_client_new(&cfg);
  if (!mp) {
    perror("mpshim_client_new");
    return 1;
  }

  static const char sdp[] =
      "v=0\r\n"
      "o=alice 2890844526 2890844526 IN IP4 192.168.1.10\r\n"
      "s=-\r\n"
      "c=IN IP4 192.168.1.10\r\n"
      "t=0 0\r\n"
      "m=audio 49170 RTP/AVP 0 8 101\r\n"
      "a=rtpmap:101 telephone-event/8000\r\n"
      "a=rtcp:49171\r\n";

  mpshim_message msg;
  mpshim_message_init(&msg);
  msg.type = MPSHIM_REQUEST;
  msg.method = "INVITE";
  msg.call_id = "3c26700d2b0f@192.168.1.10";
  msg.cseq = "101 INVITE";
  msg.from_uri = "sip:alice@example.com";
  msg.to_uri = "sip:bob@example.net";
  msg.from_tag = "9fxced76sl";
  msg.user_agent = "Example UA 1.0";
  msg.signaling_ip = "203.0.113.7";
  msg.content_type = "application/sdp";
  msg.body = sdp;
  msg.body_len = strlen(sdp);

  char* body = NULL;
  size_t len = 0;
  int rc = mpshim_use_media_proxy(mp, &msg, &body, &len);
  if (rc == MPSHIM_OK) {
    printf("use_media_proxy: ok, forward this SDP (%zu bytes):\n%s", len, body);
    mpshim_free(body);
  } else {
    /* forward the message unchanged */
    printf("use_media_proxy: %d (%s)\n", rc, mpshim_client_last_error(mp));
  }

  /* ... later, on BYE: */
  msg.method = "BYE";
  msg.cseq = "102 BYE";
  msg.to_tag = "8321234356";
  msg.body = NULL;
  msg.body_len = 0;
  rc = mpshim_end_media_session(mp, &msg);
  printf("end_media_session: %d%s%s\n", rc, rc == MPSHIM_OK ? "" : " ",
         rc == MPSHIM_OK ? "" : mpshim_client_last_error(mp));

  mpshim_client_free(mp);
  return 0;
}
