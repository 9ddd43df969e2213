package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/patronus-sdwan/patronus/dataplane/agent"
	"github.com/patronus-sdwan/patronus/gnmi-server/auth"
	"github.com/patronus-sdwan/patronus/gnmi-server/replication"
	"github.com/patronus-sdwan/patronus/gnmi-server/server"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
)

// Sources are what Watch reads at every scrape. A nil source is left out,
// with its metrics: a node without replication has no Raft metrics, one
// without --site no dataplane metrics.
type Sources struct {
	Subscriptions interface{ SubscribeStats() server.SubscribeStats }
	Store         interface{ Stats() store.Stats }
	Raft          interface{ Stats() replication.Stats }
	Auth          interface{ Stats() auth.Stats }
	Dataplane     interface{ Stats() agent.Stats }
	// Ready reports why the node cannot serve consistent reads and writes,
	// nil when it can (see node.Node.Ready).
	Ready func() error
}

// Watch adds the collector that reads src at every scrape, and with a
// dataplane the histogram ObserveCollect feeds. Call it once, before the
// registry is served.
func (m *Metrics) Watch(src Sources) {
	m.reg.MustRegister(nodeCollector{src})
	if src.Dataplane != nil {
		m.reg.MustRegister(m.collect)
	}
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(Namespace+"_"+name, help, labels, nil)
}

var (
	readyDesc = desc("node_ready", "1 when the node can serve consistent reads and writes (see /readyz), else 0.")

	subStreamsDesc   = desc("subscribe_streams", "STREAM subscriptions following the change feed.")
	subLagDesc       = desc("subscribe_lag_commits", "Commits published to the change feed that STREAM subscriptions have not read yet, summed over them.")
	subLagMaxDesc    = desc("subscribe_lag_max_commits", "Commits published to the change feed that the furthest-behind STREAM subscription has not read yet.")
	subNotifsDesc    = desc("subscribe_notifications_sent_total", "Notifications sent to subscribers (initial syncs, polls, samples, changes, history).")
	subUpdatesDesc   = desc("subscribe_updates_sent_total", "Updates (leaf values) sent to subscribers.")
	subDeletesDesc   = desc("subscribe_deletes_sent_total", "Deletes sent to subscribers.")
	subSharedDesc    = desc("subscribe_notifications_shared_total", "Notifications sent to a STREAM subscriber as another subscriber with the same request and user had already rendered and marshaled them.")
	subCoalescedDesc = desc("subscribe_updates_coalesced_total", "Writes of a leaf not sent to an ON_CHANGE subscriber because a later write of the same leaf, read at the same time, replaced them.")
	subCatchUpsDesc  = desc("subscribe_catch_ups_total", "Times a STREAM subscription that fell out of the change feed was brought up to date from a snapshot of the store and the feed's record of deletes.")
	subTooSlowDesc   = desc("subscribe_too_slow_total", "STREAM subscriptions ended with RESOURCE_EXHAUSTED because they fell out of the change feed and of its record of deletes.")

	storeDiskDesc        = desc("store_disk_usage_bytes", "Bytes of every file of the Pebble store (sstables, write-ahead log, manifests).")
	storeL0FilesDesc     = desc("store_l0_files", "Sstables in the Pebble store's level 0.")
	storeL0SublevelsDesc = desc("store_l0_sublevels", "Sublevels of the Pebble store's level 0; many slow reads and, past Pebble's thresholds, writes.")
	storeReadAmpDesc     = desc("store_read_amplification", "Sstable layers a read of the Pebble store may have to look at.")
	storeDebtDesc        = desc("store_compaction_debt_bytes", "Estimated bytes Pebble's compactions must rewrite before the LSM is in shape again.")
	storeCompactionsDesc = desc("store_compactions_total", "Compactions of the Pebble store since it opened.")
	storeFlushesDesc     = desc("store_flushes_total", "Memtable flushes of the Pebble store since it opened.")
	storeMemtableDesc    = desc("store_memtable_bytes", "Bytes of the Pebble store's memtables.")
	storeWALDesc         = desc("store_wal_bytes", "Live bytes of the Pebble store's write-ahead log.")
	storeFailuresDesc    = desc("store_write_failures_total", "Groups of transactions the store's writer could not commit.")

	raftStateDesc    = desc("raft_state", "1 for this node's Raft role now, 0 for the others.", "state")
	raftLeaderDesc   = desc("raft_leader_known", "1 when this node knows a leader, else 0.")
	raftTermDesc     = desc("raft_term", "This node's current Raft term.")
	raftCommitDesc   = desc("raft_commit_index", "The last Raft log index this node knows to be committed.")
	raftAppliedDesc  = desc("raft_applied_index", "The last Raft log index this node has handed to its state machine.")
	raftLastDesc     = desc("raft_last_log_index", "The last index in this node's Raft log (or its latest snapshot).")
	raftStoreDesc    = desc("raft_store_applied_index", "The last command entry the store holds (Raft's own entries never reach it).")
	raftLagDesc      = desc("raft_apply_lag_entries", "Committed Raft entries this node has not applied yet: commit index minus applied index.")
	raftChangesDesc  = desc("raft_leader_changes_total", "Leaders this node has seen elected since it started (a new leader, or the same in a new term).")
	raftMembersDesc  = desc("raft_members", "Servers of the Raft configuration, by suffrage.", "suffrage")
	raftLogFullDesc  = desc("raft_log_full", "1 while this node's Raft log refuses entries because its data dir has less free space than it keeps (80 MiB), else 0.")
	raftReopensDesc  = desc("raft_log_reopens_total", "Times this node's Raft log (raft-wal) was opened again after a write failed on a full disk.")
	raftSetsDesc     = desc("raft_sets_applied_total", "Sets this node applied from the Raft log, by how: \"write_set\" by the writes the leader evaluated, \"evaluated\" by evaluating the Set itself.", "how")
	raftStates       = []string{"LEADER", "FOLLOWER", "CANDIDATE", "NONVOTER", "SHUTDOWN"}
	raftStateLabels  = []string{"leader", "follower", "candidate", "nonvoter", "shutdown"}
	authFailuresDesc = desc("auth_failures_total", "Requests refused with UNAUTHENTICATED: no credentials, a wrong password or cluster secret, an unknown user, a client certificate naming no user.")
	authLimitedDesc  = desc("auth_rate_limited_total", "Requests refused with RESOURCE_EXHAUSTED by the limits: the user's or the client address's token bucket, the cap on a user's open streams, or a lockout after failed logins.", "reason")

	probeSentDesc     = desc("probe_sent_total", "Probes sent on a local path (counters start again when the path's prober restarts).", "path")
	probeReceivedDesc = desc("probe_received_total", "Probe replies received in time on a local path.", "path")
	probeLateDesc     = desc("probe_late_total", "Probe replies that came after their probe was counted lost.", "path")
	probeLostDesc     = desc("probe_lost_total", "Probes counted lost (timed out) on a local path, those answered late included.", "path")
	probeHealthDesc   = desc("probe_path_health", "A local path's health-status: 0 UNKNOWN, 1 UP, 2 DEGRADED, 3 DOWN.", "path")
	failoversDesc     = desc("dataplane_failovers_total", "Times a policy moved to another path or to ordinary routing (FAILOVER events).")
	orphanPacketsDesc = desc("dataplane_orphaned_flow_packets_total", "Packets the classifier's flow caches counted for flows whose flow table entry was gone (expired, or evicted from a full table): counted for their policy and path, in no flow.")
	orphanBytesDesc   = desc("dataplane_orphaned_flow_bytes_total", "The bytes of patronus_dataplane_orphaned_flow_packets_total.")
)

// nodeCollector reads the node's sources at scrape time.
type nodeCollector struct{ src Sources }

func (c nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{readyDesc,
		subStreamsDesc, subLagDesc, subLagMaxDesc, subNotifsDesc, subUpdatesDesc, subDeletesDesc, subCoalescedDesc, subSharedDesc, subCatchUpsDesc, subTooSlowDesc,
		storeDiskDesc, storeL0FilesDesc, storeL0SublevelsDesc, storeReadAmpDesc, storeDebtDesc, storeCompactionsDesc, storeFlushesDesc,
		storeMemtableDesc, storeWALDesc, storeFailuresDesc,
		raftStateDesc, raftLeaderDesc, raftTermDesc, raftCommitDesc, raftAppliedDesc, raftLastDesc, raftStoreDesc, raftLagDesc, raftSetsDesc,
		raftChangesDesc, raftMembersDesc, raftLogFullDesc, raftReopensDesc,
		authFailuresDesc, authLimitedDesc,
		probeSentDesc, probeReceivedDesc, probeLateDesc, probeLostDesc, probeHealthDesc, failoversDesc,
	} {
		ch <- d
	}
}

func (c nodeCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	if c.src.Ready != nil {
		gauge(readyDesc, boolValue(c.src.Ready() == nil))
	}
	if s := c.src.Subscriptions; s != nil {
		st := s.SubscribeStats()
		gauge(subStreamsDesc, float64(st.Streams))
		gauge(subLagDesc, float64(st.LagTotal))
		gauge(subLagMaxDesc, float64(st.LagMax))
		counter(subNotifsDesc, st.Notifications)
		counter(subUpdatesDesc, st.Updates)
		counter(subDeletesDesc, st.Deletes)
		counter(subCoalescedDesc, st.Coalesced)
		counter(subSharedDesc, st.Shared)
		counter(subCatchUpsDesc, st.CatchUps)
		counter(subTooSlowDesc, st.TooSlow)
	}
	if s := c.src.Store; s != nil {
		st := s.Stats()
		gauge(storeDiskDesc, float64(st.DiskUsage))
		gauge(storeL0FilesDesc, float64(st.L0Files))
		gauge(storeL0SublevelsDesc, float64(st.L0Sublevels))
		gauge(storeReadAmpDesc, float64(st.ReadAmp))
		gauge(storeDebtDesc, float64(st.CompactionDebt))
		counter(storeCompactionsDesc, uint64(st.Compactions))
		counter(storeFlushesDesc, uint64(st.Flushes))
		gauge(storeMemtableDesc, float64(st.MemTableSize))
		gauge(storeWALDesc, float64(st.WALSize))
		counter(storeFailuresDesc, st.WriteFailures)
	}
	if s := c.src.Raft; s != nil {
		st := s.Stats()
		for i, role := range raftStates {
			gauge(raftStateDesc, boolValue(st.Role == role), raftStateLabels[i])
		}
		gauge(raftLeaderDesc, boolValue(st.Leader != ""))
		gauge(raftTermDesc, float64(st.Term))
		gauge(raftCommitDesc, float64(st.CommitIndex))
		gauge(raftAppliedDesc, float64(st.AppliedIndex))
		gauge(raftLastDesc, float64(st.LastIndex))
		gauge(raftStoreDesc, float64(st.StoreApplied))
		gauge(raftLagDesc, float64(st.ApplyLag()))
		counter(raftChangesDesc, st.LeaderChanges)
		gauge(raftMembersDesc, float64(st.Voters), "voter")
		gauge(raftMembersDesc, float64(st.Nonvoters), "nonvoter")
		gauge(raftLogFullDesc, boolValue(st.LogFull))
		counter(raftReopensDesc, st.LogReopens)
		counter(raftSetsDesc, st.WriteSets, "write_set")
		counter(raftSetsDesc, st.Evaluated, "evaluated")
	}
	if s := c.src.Auth; s != nil {
		st := s.Stats()
		counter(authFailuresDesc, st.Failures)
		counter(authLimitedDesc, st.LimitedUser, "user")
		counter(authLimitedDesc, st.LimitedPeer, "peer")
		counter(authLimitedDesc, st.LimitedStreams, "streams")
		counter(authLimitedDesc, st.LockedOut, "lockout")
	}
	if s := c.src.Dataplane; s != nil {
		st := s.Stats()
		for _, p := range st.Paths {
			counter(probeSentDesc, p.ProbesSent, p.Path)
			counter(probeReceivedDesc, p.ProbesReceived, p.Path)
			counter(probeLateDesc, p.ProbesLate, p.Path)
			counter(probeLostDesc, p.ProbesLost, p.Path)
			gauge(probeHealthDesc, float64(p.Health), p.Path)
		}
		counter(failoversDesc, st.Failovers)
		counter(orphanPacketsDesc, st.Orphaned.Packets)
		counter(orphanBytesDesc, st.Orphaned.Bytes)
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
