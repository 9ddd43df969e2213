// Package probe measures the quality of a path between two WAN endpoints with
// UDP probes, and keeps the path's health: UNKNOWN, UP, DEGRADED or DOWN.
//
// A Responder runs on every endpoint's address and port (default 4784) and
// echoes probes. A Prober runs on the node serving a path's source site; it
// sends one probe every Interval to the destination endpoint's responder,
// optionally bound with SO_BINDTODEVICE to the source endpoint's interface so
// that the probe leaves on that WAN link, and turns the replies into the
// path's measured state (Stats): smoothed latency, jitter, loss over the last
// Window probes, counters, and health.
//
// # Packet format
//
// Requests and replies are the same 32-byte header, big-endian:
//
//	offset size field
//	0      4    magic "PTRN"
//	4      1    version, 1
//	5      1    flags: bit 0 set in replies, clear in requests; others zero
//	6      2    reserved, zero when sent, ignored when received
//	8      8    sequence number, chosen by the prober
//	16     8    sender timestamp, ns since the Unix epoch, echoed verbatim
//	24     8    responder timestamp, ns since the Unix epoch when the
//	            responder received the request; zero in requests
//
// A request may be longer than 32 bytes (padding); the reply is always the
// 32-byte header, so a responder never amplifies. A responder drops anything
// that is shorter, has another magic or version, or has the reply flag set
// (two responders can never echo each other forever), and answers at most
// ResponderOptions.MaxRate requests a second.
//
// # Measurements
//
// The prober matches a reply to its probe by sequence number and checks that
// the echoed sender timestamp is the one it sent; anything else is dropped.
// The round-trip time (RTT) is the reply's receive time minus the probe's send
// time, both read from the prober's monotonic clock.
//
//   - Latency is the smoothed RTT, an exponentially weighted moving average
//     with gain 1/8 like TCP's SRTT (RFC 6298): L += (RTT - L)/8, starting at
//     the first RTT.
//   - Jitter follows RFC 3550 §6.4.1, J += (|D| - J)/16, where D, for lack of
//     one-way transit times (the clocks of the two nodes are not synchronised),
//     is the difference between the RTTs of two consecutively received probes.
//     It is therefore the round-trip jitter: both directions' variation.
//   - Loss is the percentage of lost probes among the last Window probes
//     whose fate is known (answered in time or timed out); before Window
//     probes have been resolved it is over those that have.
//
// # Timeouts
//
// A probe is lost when its reply has not arrived within its timeout, counted
// from its send time. Unless Config.Timeout fixes it, the timeout adapts to
// the path like TCP's retransmission timeout: SRTT + max(4·RTTVAR, 25 ms),
// estimated from every reply including late ones, at most 3 s, and 1 s before
// the first reply. It does not depend on the interval, which is what keeps
// failure detection inside the failover budget: when a path dies, the
// DownAfter-th lost probe is sent at most DownAfter·Interval after the last
// reply came back, and is declared lost one timeout after it was sent, which
// on a steady path is its RTT plus about 25 ms. A dead path is thus DOWN
// within DownAfter·Interval + ~25 ms of the failure (3 × 200 ms + 25 ms with
// the defaults, inside the 3 × interval + 50 ms blackout budget).
//
// A reply that arrives after its probe was declared lost is late: it is
// counted in Stats.ProbesLate (the probe stays counted in Stats.ProbesLost,
// which counts every probe declared lost) and feeds the timeout estimator (so a path whose
// RTT jumps above the timeout is relearnt rather than declared dead). It
// already counted towards DOWN, but the loss rate takes it back while it is
// in the window: a probe delayed past its timeout (a busy machine) is not a
// lost packet, and must not hold a path DEGRADED. It changes neither the
// latency, the jitter nor ProbesReceived.
//
// # Health
//
// Health is a state machine fed one result per probe (lost, or answered), and
// the SLA verdict after that result, in the order the results become known
// (a reply can be known before an earlier probe's timeout). It starts
// UNKNOWN.
//
//   - DownAfter consecutive lost probes make it DOWN, from any state.
//   - From UNKNOWN, the first reply makes it UP, or DEGRADED if the SLA is
//     breached at that moment.
//   - From DOWN, UpAfter consecutive replies make it UP, or DEGRADED if the
//     SLA is breached at that moment.
//   - UP becomes DEGRADED when the SLA has been breached (latency, jitter or
//     loss above its maximum) for BreachAfter consecutive results; DEGRADED
//     becomes UP when every metric has been at or below 90% of its maximum
//     for ClearAfter consecutive results. A result between 90% and 100% of a
//     maximum resets both counts, so a metric hovering at a threshold holds
//     the state rather than flapping.
//
// The metrics compared are the smoothed ones (Latency, Jitter, Loss over the
// window), which already move slowly; the counts and the 10% band add
// hysteresis on top.
package probe
