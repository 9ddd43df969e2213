// Command patronusd runs a Patronus node: the gNMI server over the node's
// durable store. See ../../../shared/spec/cli.md for the flags.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/reflection"

	"github.com/patronus-sdwan/patronus/gnmi-server/auth"
	"github.com/patronus-sdwan/patronus/gnmi-server/cluster"
	"github.com/patronus-sdwan/patronus/gnmi-server/clusterca"
	"github.com/patronus-sdwan/patronus/gnmi-server/node"
	"github.com/patronus-sdwan/patronus/gnmi-server/replication"
)

type options struct {
	listen, http, raftListen, dataDir, nodeName, join, site string
	tlsCert, tlsKey, tlsCA, adminPasswordFile, logLevel     string
	adminPassword                                           string // read from the file or PATRONUS_ADMIN_PASSWORD
	joinCASHA256                                            string
	joinCA                                                  []byte // joinCASHA256 parsed
	nonvoter, insecure, insecureNonLoopback                 bool
	minSample, defaultDeadline                              time.Duration
	maxMsgSize                                              byteSize
	snapshotThreshold, trailingLogs                         uint64
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "patronusd:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (*options, bool, error) {
	host, _ := os.Hostname()
	o := &options{}
	fs := flag.NewFlagSet("patronusd", flag.ContinueOnError)
	fs.StringVar(&o.listen, "listen", "127.0.0.1:9339", "gNMI (gRPC) address")
	fs.StringVar(&o.http, "http", "127.0.0.1:9341", "HTTP address for /metrics (Prometheus), /healthz and /readyz")
	fs.StringVar(&o.raftListen, "raft-listen", "127.0.0.1:9340", "address the cluster's Raft traffic uses")
	fs.StringVar(&o.dataDir, "data-dir", "./patronus-data", "store and generated TLS material")
	fs.StringVar(&o.nodeName, "node-name", host, "this node's name")
	fs.StringVar(&o.join, "join", "", "gNMI address of any member of an existing cluster to join; without it an empty data dir bootstraps a new single-node cluster")
	fs.StringVar(&o.joinCASHA256, "join-ca-sha256", "", "SHA-256 fingerprint of the cluster CA (logged by every member as ca-sha256-fingerprint): with it, a --join verifies the member it joins through before sending the admin's password; without it, the first contact is trusted")
	fs.BoolVar(&o.nonvoter, "nonvoter", false, "join as a non-voting member (an edge node that replicates config but does not vote)")
	fs.StringVar(&o.site, "site", "", "the site this node serves: runs its dataplane (eBPF classifier, policy routing, probes); needs root")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "server certificate (PEM); default: self-signed, generated into the data dir")
	fs.StringVar(&o.tlsKey, "tls-key", "", "server key (PEM)")
	fs.StringVar(&o.tlsCA, "tls-ca", "", "CA (PEM) that client certificates must chain to: a client that presents one is the user its Subject CommonName names, without a password (mTLS)")
	fs.StringVar(&o.adminPasswordFile, "admin-password-file", "", "file whose first line is the admin's password: the first admin's when a new cluster bootstraps, and the credential of a --join (default: env PATRONUS_ADMIN_PASSWORD; else a bootstrap generates one and prints it once on stderr)")
	fs.BoolVar(&o.insecure, "insecure", false, "plaintext gRPC, for loopback development and tests only (refused on another --listen address)")
	fs.BoolVar(&o.insecureNonLoopback, "insecure-non-loopback-dangerous", false, "allow --insecure on a --listen address that is not loopback: passwords and data cross the network in clear (an isolated lab only)")
	o.maxMsgSize = 16 << 20
	fs.Var(&o.maxMsgSize, "max-msg-size", "largest gRPC message a client may send (a SetRequest); larger ones get RESOURCE_EXHAUSTED")
	fs.DurationVar(&o.defaultDeadline, "default-deadline", auth.DefaultDeadline, "deadline of a Get, Set or Capabilities that arrives without one (0: none)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.Uint64Var(&o.snapshotThreshold, "raft-snapshot-threshold", 8192, "Raft log entries between snapshots")
	fs.Uint64Var(&o.trailingLogs, "raft-trailing-logs", 10240, "Raft log entries a snapshot leaves for followers that lag")
	fs.DurationVar(&o.minSample, "min-sample-interval", 100*time.Millisecond, "smallest SAMPLE interval a subscription may ask for")
	// Every flag also reads PATRONUS_<FLAG>; a flag on the command line wins.
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		env := "PATRONUS_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok && envErr == nil {
			if err := f.Value.Set(v); err != nil {
				envErr = fmt.Errorf("%s=%q: %v", env, v, err)
			}
		}
	})
	if envErr != nil {
		return nil, false, envErr
	}
	// Parse errors come back as one line from run; -help prints the flags.
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stdout)
			fmt.Println("Usage: patronusd [flags]   (every flag also reads PATRONUS_<FLAG>)")
			fs.PrintDefaults()
		}
		return nil, false, err
	}
	if fs.NArg() > 0 {
		return nil, false, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	switch {
	case o.nonvoter && o.join == "":
		return nil, false, errors.New("--nonvoter needs --join: a new cluster's first node is a voter")
	case o.joinCASHA256 != "" && o.join == "":
		return nil, false, errors.New("--join-ca-sha256 needs --join: it verifies the member joined through")
	case o.joinCASHA256 != "" && o.insecure:
		return nil, false, errors.New("--join-ca-sha256 needs TLS: with --insecure there is no cluster CA")
	case o.tlsCA != "" && o.insecure:
		return nil, false, errors.New("--tls-ca needs TLS: it cannot go with --insecure")
	case o.insecureNonLoopback && !o.insecure:
		return nil, false, errors.New("--insecure-non-loopback-dangerous goes with --insecure")
	case o.maxMsgSize < minMsgSize:
		return nil, false, fmt.Errorf("--max-msg-size %v: at least %v", o.maxMsgSize, byteSize(minMsgSize))
	case o.defaultDeadline < 0:
		return nil, false, fmt.Errorf("--default-deadline %v: negative", o.defaultDeadline)
	case (o.tlsCert == "") != (o.tlsKey == ""):
		return nil, false, errors.New("--tls-cert and --tls-key go together")
	case o.nodeName == "":
		return nil, false, errors.New("--node-name is empty and the host name is unknown")
	}
	if o.joinCASHA256 != "" {
		var err error
		if o.joinCA, err = clusterca.ParseFingerprint(o.joinCASHA256); err != nil {
			return nil, false, fmt.Errorf("--join-ca-sha256: %v", err)
		}
	}
	if o.adminPasswordFile != "" {
		b, err := os.ReadFile(o.adminPasswordFile)
		if err != nil {
			return nil, false, fmt.Errorf("--admin-password-file: %v", err)
		}
		line, _, _ := strings.Cut(string(b), "\n")
		if o.adminPassword = strings.TrimRight(line, "\r"); o.adminPassword == "" {
			return nil, false, fmt.Errorf("--admin-password-file %s: the first line is empty", o.adminPasswordFile)
		}
	} else {
		o.adminPassword = os.Getenv("PATRONUS_ADMIN_PASSWORD")
	}
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == "node-name" })
	_, inEnv := os.LookupEnv("PATRONUS_NODE_NAME")
	return o, set || inEnv, nil
}

func run(args []string) error {
	o, nodeNameSet, err := parseFlags(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)

	if err := os.MkdirAll(o.dataDir, 0o700); err != nil {
		return fmt.Errorf("--data-dir %s: %v", o.dataDir, err)
	}
	if err := stableNodeName(o, nodeNameSet); err != nil {
		return err
	}
	if o.insecure && !o.insecureNonLoopback {
		if ok, err := loopback(o.listen); err != nil || !ok {
			return fmt.Errorf("--insecure: --listen %s is not a loopback address, and plaintext gRPC would carry passwords and data across the network in clear; serve TLS, or add --insecure-non-loopback-dangerous on an isolated network", o.listen)
		}
	}
	var clientCAs *x509.CertPool
	if o.tlsCA != "" {
		if clientCAs, err = loadCA(o.tlsCA); err != nil {
			return err
		}
	}
	lis, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %v", o.listen, err)
	}
	var hlis net.Listener
	if o.http != "" {
		if hlis, err = net.Listen("tcp", o.http); err != nil {
			lis.Close()
			return fmt.Errorf("--http %s: %v", o.http, err)
		}
	}

	// Without --insecure the cluster's own CA secures the members' traffic:
	// Raft is mutual TLS, and so are the members' gNMI calls to each other.
	var ca *clusterca.Manager
	var gopts []grpc.ServerOption
	if !o.insecure {
		cert, fingerprint, err := loadOrCreateCert(o.dataDir, o.tlsCert, o.tlsKey, lis.Addr())
		if err != nil {
			return err
		}
		tc := &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12}
		if clientCAs != nil {
			// If given, not required: clients with a password (gnmic -u/-p)
			// keep working. A certificate that is given must verify, or the
			// handshake fails.
			tc.ClientCAs, tc.ClientAuth = clientCAs, tls.VerifyClientCertIfGiven
		}
		ca = clusterca.New(clusterca.Config{Dir: filepath.Join(o.dataDir, "tls"), NodeName: o.nodeName,
			Addrs: []string{o.raftListen, lis.Addr().String()}, Logger: log})
		// Members ask for their own server name and get mutual TLS with the
		// cluster CA instead of tc.
		ca.ServeMembers(tc)
		log.Info("TLS enabled", "sha256-fingerprint", fingerprint, "client-certificates", clientCAs != nil)
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(tc)))
	} else {
		log.Warn("plaintext gRPC (--insecure): for loopback development and tests only; Raft traffic (--raft-listen) is plaintext TCP too")
	}
	gopts = append(gopts, grpc.MaxRecvMsgSize(int(o.maxMsgSize)), node.StreamWorkers())

	// Members reach each other's gNMI servers with the transport they
	// serve: with TLS, mutual TLS with the cluster CA's certificates.
	memberCreds := insecure.NewCredentials()
	if ca != nil {
		memberCreds = ca.TransportCredentials()
	}
	dial := func(addr string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
		return grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(memberCreds)}, opts...)...)
	}
	n, err := node.Open(node.Config{
		DataDir: o.dataDir, NodeName: o.nodeName, MinSampleInterval: o.minSample, Logger: log, Site: o.site,
		Cluster: &node.ClusterConfig{
			RaftAddr: o.raftListen, GNMIAddr: lis.Addr().String(), Join: o.join, Nonvoter: o.nonvoter, Dial: dial,
			SnapshotThreshold: o.snapshotThreshold, TrailingLogs: o.trailingLogs, CA: ca,
		},
		// Authentication is always on in patronusd; --insecure only drops TLS.
		Auth: &auth.Config{AdminPassword: o.adminPassword, PrintPassword: printAdminPassword},
	})
	if err != nil {
		lis.Close()
		return err
	}
	var joinDial func(string) (*grpc.ClientConn, error)
	var fetchCA func(context.Context, grpc.ClientConnInterface) error
	if o.join != "" {
		joinCreds, member, err := joinCredentials(n, o)
		if err != nil {
			n.Close()
			lis.Close()
			return err
		}
		joinDial = func(addr string) (*grpc.ClientConn, error) { return dial(addr, grpc.WithPerRPCCredentials(joinCreds)) }
		if !member {
			// A new member verifies the member it joins through against
			// the CA fingerprint it was given; without one it has no trust
			// anchor yet, and sends the admin's password over TLS without
			// verifying the server. Then it fetches the cluster CA.
			creds := insecure.NewCredentials()
			switch {
			case o.joinCA != nil:
				creds = credentials.NewTLS(clusterca.JoinTLS(o.joinCA))
			case !o.insecure:
				log.Warn("--join without --join-ca-sha256: the member joined through is not verified before the admin's password is sent")
				creds = credentials.NewTLS(&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}) //nolint:gosec // see above
			}
			joinDial = func(addr string) (*grpc.ClientConn, error) {
				return grpc.NewClient(addr, grpc.WithTransportCredentials(creds), grpc.WithPerRPCCredentials(joinCreds))
			}
			if ca != nil && !ca.Ready() {
				fetchCA = func(ctx context.Context, cc grpc.ClientConnInterface) error {
					b, err := clusterca.Fetch(ctx, cc)
					if err != nil {
						return err
					}
					if o.joinCA != nil {
						got, err := clusterca.Decode(b)
						if err != nil {
							return err
						}
						if sum := sha256.Sum256(got.Cert.Raw); !bytes.Equal(sum[:], o.joinCA) {
							return errors.New("the member handed over a cluster CA of another fingerprint than --join-ca-sha256")
						}
					}
					return ca.Install(b)
				}
			}
		}
	}
	// serving is set once gRPC serves, stopping on a signal to stop;
	// /readyz answers 503 outside that window.
	var serving, stopping atomic.Bool
	var hs *http.Server
	if hlis != nil {
		// Served from here on, so that /healthz answers while the node
		// catches up with the cluster's log.
		hs = &http.Server{Handler: httpMux(o, n, &serving, &stopping), ReadHeaderTimeout: 5 * time.Second}
		go hs.Serve(hlis)
	}
	if n.Repl != nil {
		// Serve only once the log's entries are applied, or after a bound
		// when no quorum answers (reads may then be stale until it does).
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		err := n.Repl.WaitCaughtUp(ctx)
		cancel()
		if errors.Is(err, replication.ErrHalted) {
			if hs != nil {
				hs.Close()
			}
			n.Close()
			return haltError(n)
		}
		if err != nil {
			log.Warn("serving before catching up with the cluster log", "applied", n.Repl.Applied())
		}
	}
	if o.join != "" {
		go join(log, joinDial, o.join, cluster.MemberRequest(o.nodeName, lis.Addr().String(), o.raftListen, o.nonvoter), fetchCA)
	}
	// Metrics first: they count what authentication and the limits refuse.
	gopts = append(gopts,
		grpc.ChainUnaryInterceptor(n.Metrics.UnaryInterceptor(), auth.DeadlineInterceptor(o.defaultDeadline), n.Auth.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(n.Metrics.StreamInterceptor(), n.Auth.StreamInterceptor()))
	gs := grpc.NewServer(gopts...)
	gpb.RegisterGNMIServer(gs, n.Server)
	healthStop, stopHealth := context.WithCancel(context.Background())
	defer stopHealth()
	refreshHealth := serveHealth(gs, healthStop, func() error { return readiness(n, &serving, &stopping) })
	if ca != nil {
		ca.Register(gs)
	}
	reflection.Register(gs)

	serveErr := make(chan error, 1)
	go func() { serveErr <- gs.Serve(lis) }()
	serving.Store(true)
	refreshHealth()
	log.Info("patronusd serving", "gnmi", lis.Addr().String(), "http", o.http, "data-dir", o.dataDir, "node", o.nodeName)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	var halted <-chan struct{} // stays nil, never ready, without replication
	if n.Repl != nil {
		halted = n.Repl.Halted()
	}
	var haltErr error
	select {
	case s := <-sig:
		stopping.Store(true)
		log.Info("shutting down", "signal", s.String())
	case <-halted:
		// A committed entry this node cannot apply: it stops, and applies
		// the log again from its store once restarted.
		stopping.Store(true)
		haltErr = haltError(n)
		log.Error("shutting down", "error", haltErr)
	case err := <-serveErr:
		if hs != nil {
			hs.Close()
		}
		n.Close()
		return fmt.Errorf("gNMI server: %v", err)
	}
	// In-flight Sets finish; subscriptions and health watches are closed.
	stopHealth()
	n.Server.Shutdown()
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		gs.Stop()
	}
	if hs != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		hs.Shutdown(ctx)
		cancel()
	}
	if err := n.Close(); err != nil && haltErr == nil {
		return fmt.Errorf("closing the store: %v", err)
	}
	if haltErr != nil {
		return haltErr
	}
	log.Info("stopped")
	return nil
}

// haltError is what patronusd exits with once its node halted
// (replication.Node.Halted).
func haltError(n *node.Node) error {
	return fmt.Errorf("stopped applying the cluster log: %w; restart patronusd once that is mended", n.Repl.HaltErr())
}

// httpMux serves --http: /metrics, /healthz and /readyz wherever it
// listens, in plaintext by design (they hold no configuration), and the
// profiles only on loopback.
func httpMux(o *options, n *node.Node, serving, stopping *atomic.Bool) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", n.Metrics.Handler())
	// Profiles for diagnosing a node, on loopback only: they are
	// unauthenticated, show the node's internals and cost CPU while they
	// run.
	if ok, _ := loopback(o.http); ok {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	// Liveness: the process answers.
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	// Readiness: gNMI is served and the node can serve consistent reads
	// and writes (node.Ready); otherwise 503 and why, in one line.
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := readiness(n, serving, stopping); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// readiness is why the node is not ready to serve, or nil: what /readyz
// and the gRPC health service say.
func readiness(n *node.Node, serving, stopping *atomic.Bool) error {
	switch {
	case stopping.Load():
		return errors.New("shutting down")
	case !serving.Load():
		return errors.New("starting: catching up with the cluster log before serving gNMI")
	}
	return n.Ready()
}

// join asks a member to add this node, retrying until it succeeds: the
// member forwards the request to the leader, which adds the node to the Raft
// configuration and records it in /system/cluster/members.
//
// A new member first gets the cluster CA with fetchCA, if not nil, so that
// its Raft transport takes the leader's first call, which comes as soon as
// the node is added.
func join(log *slog.Logger, dial func(string) (*grpc.ClientConn, error), addr string, req *gpb.SetRequest, fetchCA func(context.Context, grpc.ClientConnInterface) error) {
	cc, err := dial(addr)
	if err != nil {
		log.Error("--join", "addr", addr, "err", err)
		return
	}
	defer cc.Close()
	for attempt := 1; fetchCA != nil; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := fetchCA(ctx, cc)
		cancel()
		if err == nil {
			log.Info("received the cluster CA", "via", addr)
			break
		}
		if attempt%10 == 1 {
			log.Warn("fetching the cluster CA to join; retrying", "via", addr, "err", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	client := gpb.NewGNMIClient(cc)
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := client.Set(ctx, req)
		cancel()
		if err == nil {
			log.Info("joined the cluster", "via", addr)
			return
		}
		if attempt%10 == 1 {
			log.Warn("joining the cluster; retrying", "via", addr, "err", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// printAdminPassword shows a generated first admin's password, once, on
// stderr; it is never logged or stored in clear.
func printAdminPassword(password string) {
	fmt.Fprintf(os.Stderr, "patronusd: the new cluster's first admin is user %q with password %s (shown only this once; change it with a Set of /system/aaa/users/user[username=%s]/config/password)\n", auth.FirstAdmin, password, auth.FirstAdmin)
}

// joinCredentials are those of a --join: a node that already belongs to
// the cluster (a restart) has the cluster secret in its store and joins as
// a member; a new node has nothing yet and joins as the admin, with the
// password of --admin-password-file or PATRONUS_ADMIN_PASSWORD.
func joinCredentials(n *node.Node, o *options) (creds credentials.PerRPCCredentials, member bool, err error) {
	if _, ok := n.Auth.ClusterSecret(); ok {
		return n.Auth.MemberCredentials(o.nodeName), true, nil
	}
	if o.adminPassword == "" {
		return nil, false, errors.New("--join: a new member authenticates its join as user admin; give --admin-password-file or PATRONUS_ADMIN_PASSWORD")
	}
	return auth.Password{Username: auth.FirstAdmin, Password: o.adminPassword}, false, nil
}

// stableNodeName keeps a node's name with its data: the Raft configuration
// knows the node by it, so a restart under another name (say, after the
// host was renamed) would leave the node outside its own cluster.
func stableNodeName(o *options, explicit bool) error {
	if err := os.MkdirAll(o.dataDir, 0o700); err != nil {
		return fmt.Errorf("--data-dir %s: %v", o.dataDir, err)
	}
	file := filepath.Join(o.dataDir, "node-name")
	b, err := os.ReadFile(file)
	switch {
	case err == nil:
		stored := strings.TrimSpace(string(b))
		if explicit && stored != o.nodeName {
			return fmt.Errorf("--node-name %s: the data dir %s belongs to node %q", o.nodeName, o.dataDir, stored)
		}
		o.nodeName = stored
		return nil
	case os.IsNotExist(err):
		return os.WriteFile(file, []byte(o.nodeName+"\n"), 0o600)
	}
	return fmt.Errorf("--data-dir %s: %v", o.dataDir, err)
}
