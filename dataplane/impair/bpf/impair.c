// SPDX-License-Identifier: GPL-2.0
//
// Patronus lab impairment: a tcx program that drops a configurable fraction
// of the IP packets crossing an interface, standing in for netem's loss.

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define TCX_NEXT (-1)
#define TCX_DROP 2

#define PPM_ALL 1000000u

enum stat {
	STAT_PASSED = 0,
	STAT_DROPPED = 1,
	STAT_MAX,
};

/* loss[0]: packets per million to drop; PPM_ALL or more drops all. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} loss SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline int count(__u32 which, int verdict)
{
	__u64 *n = bpf_map_lookup_elem(&stats, &which);

	if (n)
		*n += 1;
	return verdict;
}

SEC("tc")
int impair(struct __sk_buff *skb)
{
	__u32 zero = 0;
	__u32 *ppm;

	/* ARP is never dropped, so that the neighbour entries stay valid and
	 * IP traffic sees exactly the configured loss. */
	if (skb->protocol != bpf_htons(ETH_P_IP) && skb->protocol != bpf_htons(ETH_P_IPV6))
		return TCX_NEXT;
	ppm = bpf_map_lookup_elem(&loss, &zero);
	if (!ppm || *ppm == 0)
		return count(STAT_PASSED, TCX_NEXT);
	if (*ppm >= PPM_ALL || bpf_get_prandom_u32() % PPM_ALL < *ppm)
		return count(STAT_DROPPED, TCX_DROP);
	return count(STAT_PASSED, TCX_NEXT);
}

char _license[] SEC("license") = "GPL";
