// SPDX-License-Identifier: GPL-2.0
//
// Patronus traffic classifier: a tcx ingress program that matches packets
// against a priority-ordered policy table, caches the decision per flow and
// steers (skb->mark), drops or passes the packet.

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_RULES 1024 /* power of two: indexes are masked with MAX_RULES-1 */
#define MAX_PATHS 1024
#define MAX_FLOWS 65536

#define MARK_BASE 0x50A70000u
#define MARK_MASK 0x0000FFFFu

#define NO_RULE 0xFFFFFFFFu
#define NO_DSCP 0xFF

#define TCX_NEXT (-1)
#define TCX_DROP 2

enum action {
	ACTION_PASS = 0,
	ACTION_STEER = 1,
	ACTION_DROP = 2,
};

enum rule_flags {
	RF_PROTO = 1 << 0,
	RF_DSCP = 1 << 1,
};

/* Addresses are 16 bytes in network order (IPv4 mapped to ::ffff:a.b.c.d),
 * read as two native-endian u64 so a prefix test is two AND/XOR pairs. */
struct rule {
	__u64 src[2];
	__u64 src_mask[2];
	__u64 dst[2];
	__u64 dst_mask[2];
	__u32 id;
	__u16 sport_lo;
	__u16 sport_hi;
	__u16 dport_lo;
	__u16 dport_hi;
	__u8 flags;
	__u8 family; /* 0 any, 4 or 6 */
	__u8 proto;
	__u8 dscp;
	__u8 action;
	__u8 set_dscp; /* NO_DSCP: leave it */
	__u8 _pad[6];
};

struct ruleset {
	__u32 count;
	__u32 generation;
	struct rule rules[MAX_RULES];
};

struct flow_key {
	__u64 src[2];
	__u64 dst[2];
	__u16 sport;
	__u16 dport;
	__u8 family;
	__u8 proto;
	__u8 _pad[2];
};

struct flow_val {
	__u64 packets;
	__u64 bytes;
	__u64 first_seen; /* jiffies */
	__u64 last_seen;  /* jiffies */
	__u32 rule_id;
	__u32 mark;
	__u32 generation;
	__u8 action;
	__u8 set_dscp;
	__u8 _pad[2];
};

struct counter {
	__u64 packets;
	__u64 bytes;
};

/* The rule set lives in a one-element inner map that user space replaces
 * whole: swapping the outer slot is a single pointer exchange, so a packet
 * sees either the old or the new set, never a mix. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_ARRAY);
		__uint(max_entries, 1);
		__type(key, __u32);
		__type(value, struct ruleset);
	});
} rulesets SEC(".maps");

/* The generation of the installed rule set, written after the swap, so a
 * packet of a known flow needs no rule-set lookup to see that its cached
 * decision is current. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} generation SEC(".maps");

/* Current path mark per rule id; 0 means no eligible path. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_RULES);
	__type(key, __u32);
	__type(value, __u32);
} steer SEC(".maps");

/* Non-zero when a path index may keep the flows already on it. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_PATHS);
	__type(key, __u32);
	__type(value, __u32);
} eligible SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_RULES);
	__type(key, __u32);
	__type(value, struct counter);
} rule_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_PATHS);
	__type(key, __u32);
	__type(value, struct counter);
} path_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_FLOWS);
	__type(key, struct flow_key);
	__type(value, struct flow_val);
} flows SEC(".maps");

/* clang 14 emits the value type of an inner map definition as a forward
 * declaration; this anchor makes it emit struct ruleset in full. */
const struct ruleset *const ruleset_btf_anchor = 0;

/* Set at load time only by benchmarks, to measure the rule walk. */
volatile const __u32 no_flow_cache = 0;

struct match_ctx {
	struct ruleset *rs;
	struct flow_key k;
	__u8 dscp;
	__s32 found;
};

static long match_rule(__u32 i, struct match_ctx *c)
{
	if (i >= MAX_RULES)
		return 1;
	struct rule *r = &c->rs->rules[i];

	if (r->family && r->family != c->k.family)
		return 0;
	if (((c->k.src[0] & r->src_mask[0]) ^ r->src[0]) |
	    ((c->k.src[1] & r->src_mask[1]) ^ r->src[1]) |
	    ((c->k.dst[0] & r->dst_mask[0]) ^ r->dst[0]) |
	    ((c->k.dst[1] & r->dst_mask[1]) ^ r->dst[1]))
		return 0;
	if ((r->flags & RF_PROTO) && r->proto != c->k.proto)
		return 0;
	if ((r->flags & RF_DSCP) && r->dscp != c->dscp)
		return 0;
	if (c->k.sport < r->sport_lo || c->k.sport > r->sport_hi)
		return 0;
	if (c->k.dport < r->dport_lo || c->k.dport > r->dport_hi)
		return 0;
	c->found = i;
	return 1;
}

static __always_inline int mark_valid(__u32 mark)
{
	return (mark & ~MARK_MASK) == MARK_BASE && (mark & MARK_MASK) < MAX_PATHS;
}

/* resolve returns the mark a flow of rule_id goes on: it keeps mark while
 * that path is eligible, otherwise it takes the rule's current mark. */
static __always_inline __u32 resolve(__u32 mark, __u32 rule_id)
{
	__u32 *cur = bpf_map_lookup_elem(&steer, &rule_id);
	__u32 want = cur ? *cur : 0;

	if (mark == want)
		return want;
	if (mark_valid(mark)) {
		__u32 idx = mark & MARK_MASK;
		__u32 *ok = bpf_map_lookup_elem(&eligible, &idx);
		if (ok && *ok)
			return mark;
	}
	return want;
}

static __always_inline void count(void *map, __u32 key, __u64 bytes)
{
	struct counter *c = bpf_map_lookup_elem(map, &key);
	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

SEC("tc")
int classify(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct match_ctx mc = {.found = -1};
	__u8 tos_hi = 0, tos_lo = 0; /* first two header bytes, for set-dscp */
	void *l4 = 0;

	if ((void *)(eth + 1) > data_end)
		return TCX_NEXT;

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > data_end)
			return TCX_NEXT;
		__u32 ihl = ip->ihl * 4;
		if (ihl < sizeof(*ip))
			return TCX_NEXT;
		mc.k.family = 4;
		mc.k.proto = ip->protocol;
		mc.k.src[1] = ((__u64)ip->saddr << 32) | 0xffff0000ULL;
		mc.k.dst[1] = ((__u64)ip->daddr << 32) | 0xffff0000ULL;
		mc.dscp = ip->tos >> 2;
		tos_hi = ((__u8 *)ip)[0];
		tos_lo = ip->tos;
		/* Only the first fragment carries ports. */
		if (!(ip->frag_off & bpf_htons(0x1fff)))
			l4 = (void *)ip + ihl;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end)
			return TCX_NEXT;
		mc.k.family = 6;
		mc.k.proto = ip6->nexthdr;
		__builtin_memcpy(mc.k.src, &ip6->saddr, 16);
		__builtin_memcpy(mc.k.dst, &ip6->daddr, 16);
		tos_hi = ((__u8 *)ip6)[0];
		tos_lo = ((__u8 *)ip6)[1];
		mc.dscp = (((tos_hi & 0x0f) << 4) | (tos_lo >> 4)) >> 2;
		l4 = ip6 + 1;
	} else {
		return TCX_NEXT;
	}

	if (l4 && (mc.k.proto == IPPROTO_TCP || mc.k.proto == IPPROTO_UDP)) {
		__be16 *ports = l4;
		if ((void *)(ports + 2) > data_end)
			return TCX_NEXT;
		mc.k.sport = bpf_ntohs(ports[0]);
		mc.k.dport = bpf_ntohs(ports[1]);
	}

	__u32 zero = 0;
	__u32 *genp = bpf_map_lookup_elem(&generation, &zero);
	if (!genp || !*genp)
		return TCX_NEXT; /* no rule set yet */
	/* Flow times are in jiffies: one tick is plenty for flow ages, and
	 * reading it costs nothing next to a clock read. */
	__u64 now = bpf_jiffies64();
	__u64 len = skb->len;

	struct flow_val *f = 0;
	if (!no_flow_cache)
		f = bpf_map_lookup_elem(&flows, &mc.k);

	__u32 rule_id = NO_RULE, mark = 0, gen = *genp;
	__u8 action = ACTION_PASS, set_dscp = NO_DSCP;
	int fresh = 0;
	if (f && f->generation == gen) {
		rule_id = f->rule_id;
		action = f->action;
		set_dscp = f->set_dscp;
		mark = f->mark;
	} else {
		void *inner = bpf_map_lookup_elem(&rulesets, &zero);
		if (!inner)
			return TCX_NEXT;
		struct ruleset *rs = bpf_map_lookup_elem(inner, &zero);
		if (!rs)
			return TCX_NEXT;
		/* The set evaluated, which may already be newer than gen. */
		gen = rs->generation;
		mc.rs = rs;
		__u32 n = rs->count;
		if (n > MAX_RULES)
			n = MAX_RULES;
		bpf_loop(n, match_rule, &mc, 0);
		if (mc.found >= 0 && mc.found < MAX_RULES) {
			struct rule *r = &rs->rules[mc.found];
			rule_id = r->id;
			action = r->action;
			set_dscp = r->set_dscp;
		}
		/* The same rule after a rule-set change keeps its path. */
		if (f && f->rule_id == rule_id)
			mark = f->mark;
		fresh = 1;
	}

	if (action == ACTION_STEER && rule_id != NO_RULE)
		mark = resolve(mark, rule_id);
	else
		mark = 0;

	if (f) {
		if (fresh) {
			f->rule_id = rule_id;
			f->action = action;
			f->set_dscp = set_dscp;
		}
		if (f->mark != mark)
			f->mark = mark;
		if (fresh)
			f->generation = gen;
		/* Plain adds: a flow's packets are nearly always handled on one
		 * CPU, and an atomic add costs more than the rest of a hit.
		 * The rule and path counters are exact. */
		f->packets++;
		f->bytes += len;
		if (f->last_seen != now)
			f->last_seen = now;
	} else if (!no_flow_cache) {
		struct flow_val v = {
			.packets = 1,
			.bytes = len,
			.first_seen = now,
			.last_seen = now,
			.rule_id = rule_id,
			.mark = mark,
			.generation = gen,
			.action = action,
			.set_dscp = set_dscp,
		};
		bpf_map_update_elem(&flows, &mc.k, &v, BPF_NOEXIST);
	}

	if (rule_id != NO_RULE)
		count(&rule_stats, rule_id, len);
	if (action == ACTION_DROP)
		return TCX_DROP;
	if (mark_valid(mark)) {
		skb->mark = mark;
		count(&path_stats, mark & MARK_MASK, len);
	}

	if (set_dscp < 64 && set_dscp != mc.dscp) {
		if (mc.k.family == 4) {
			__u8 tos = (set_dscp << 2) | (tos_lo & 3);
			__be16 old = bpf_htons(((__u16)tos_hi << 8) | tos_lo);
			__be16 new = bpf_htons(((__u16)tos_hi << 8) | tos);
			bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), old, new, 2);
			bpf_skb_store_bytes(skb, ETH_HLEN + 1, &tos, 1, 0);
		} else {
			__u8 tc = (set_dscp << 2) | (((tos_lo >> 4)) & 3);
			__u8 b[2] = {
				(tos_hi & 0xf0) | (tc >> 4),
				(tc << 4) | (tos_lo & 0x0f),
			};
			bpf_skb_store_bytes(skb, ETH_HLEN, b, 2, BPF_F_RECOMPUTE_CSUM);
		}
	}
	return TCX_NEXT;
}

struct clock_sample {
	__u64 jiffies;
	__u64 mono_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct clock_sample);
} clock SEC(".maps");

/* Run by user space with BPF_PROG_TEST_RUN to relate jiffies to
 * CLOCK_MONOTONIC; never attached. */
SEC("tc")
int sample_clock(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct clock_sample *s = bpf_map_lookup_elem(&clock, &zero);
	if (s) {
		s->jiffies = bpf_jiffies64();
		s->mono_ns = bpf_ktime_get_ns();
	}
	return TCX_NEXT;
}

char __license[] SEC("license") = "GPL";
