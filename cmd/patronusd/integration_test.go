// Integration tests that run the real patronusd binary: TestMain builds it
// (and the gnmi_cli tool) once, and every test starts its own daemons on
// free loopback ports with their own data directories.
package main_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"github.com/openconfig/gnmi/proto/gnmi_ext"
	"github.com/openconfig/ygot/ygot"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/patronus-sdwan/patronus/gen/model"
	"github.com/patronus-sdwan/patronus/gnmi-server/auth"
)

// Set by TestMain.
var (
	patronusdBin string
	gnmiCLIBin   string
	gnmiCLIErr   error
	// adminPasswordFile holds testAdminPassword; launch passes it to every
	// daemon that is given no admin password otherwise.
	adminPasswordFile string
)

// testAdminPassword is the first admin's password of the test daemons.
const testAdminPassword = "it-admin-pw"

// adminCreds authenticates a test client as the first admin.
var adminCreds = auth.Password{Username: "admin", Password: testAdminPassword}

const scenarioConfig = "../../testdata/scenario1/config.json"

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "patronusd-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration: temp dir:", err)
		os.Exit(1)
	}
	patronusdBin = filepath.Join(dir, "patronusd")
	gnmiCLIBin = filepath.Join(dir, "gnmi_cli")
	adminPasswordFile = filepath.Join(dir, "admin-password")
	if err := os.WriteFile(adminPasswordFile, []byte(testAdminPassword+"\n"), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		os.Exit(1)
	}
	var wg sync.WaitGroup
	var daemonErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		if out, err := exec.Command("go", "build", "-o", patronusdBin, ".").CombinedOutput(); err != nil {
			daemonErr = fmt.Errorf("go build patronusd: %v\n%s", err, out)
		}
	}()
	go func() {
		defer wg.Done()
		if out, err := exec.Command("go", "build", "-o", gnmiCLIBin, "github.com/openconfig/gnmi/cmd/gnmi_cli").CombinedOutput(); err != nil {
			gnmiCLIErr = fmt.Errorf("go build gnmi_cli: %v\n%s", err, out)
		}
	}()
	wg.Wait()
	if daemonErr != nil {
		fmt.Fprintln(os.Stderr, daemonErr)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// ---------------------------------------------------------------------------
// Running the daemon.

// lockedBuffer collects a process's stderr.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type daemon struct {
	t      testing.TB
	name   string
	cmd    *exec.Cmd
	Addr   string
	HTTP   string
	Dir    string
	stderr *lockedBuffer
	done   chan struct{}
	state  *os.ProcessState
	conn   *grpc.ClientConn
	Client gpb.GNMIClient
	// creds authenticate Client; nil means adminCreds.
	creds credentials.PerRPCCredentials
}

// freeAddr returns a loopback address nobody listens on right now.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// withAdminPassword adds --admin-password-file with testAdminPassword to
// args unless args or env give the admin password some other way.
func withAdminPassword(args, env []string) []string {
	if slices.Contains(args, "--admin-password-file") || slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, "PATRONUS_ADMIN_PASSWORD") }) {
		return args
	}
	return append(slices.Clone(args), "--admin-password-file", adminPasswordFile)
}

// launch starts patronusd with args (plus env) and does not wait for it to
// serve. The process is killed when the test ends, and its stderr logged if
// the test failed. Unless args or env say otherwise, the daemon's first
// admin has testAdminPassword.
func launch(t testing.TB, name string, args, env []string) *daemon {
	t.Helper()
	d := &daemon{t: t, name: name, stderr: &lockedBuffer{}, done: make(chan struct{})}
	if !slices.Contains(args, "--raft-listen") {
		// Every daemon is a (single-node) Raft cluster: keep them apart.
		args = append(slices.Clone(args), "--raft-listen", freeAddr(t))
	}
	args = withAdminPassword(args, env)
	d.cmd = exec.Command(patronusdBin, args...)
	d.cmd.Env = append(os.Environ(), env...)
	d.cmd.Stderr = d.stderr
	d.cmd.Stdout = d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("starting patronusd: %v", err)
	}
	go func() {
		_ = d.cmd.Wait()
		d.state = d.cmd.ProcessState
		close(d.done)
	}()
	t.Cleanup(func() {
		d.kill()
		if d.conn != nil {
			d.conn.Close()
		}
		if t.Failed() {
			t.Logf("patronusd %s (%v) stderr:\n%s", d.name, args, d.stderr.String())
		}
	})
	return d
}

func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and reaps the process.
func (d *daemon) kill() {
	if !d.exited() {
		_ = d.cmd.Process.Kill()
	}
	<-d.done
}

// stop sends sig and waits for the process to exit; it returns the exit code.
func (d *daemon) stop(sig os.Signal, timeout time.Duration) (int, error) {
	if err := d.cmd.Process.Signal(sig); err != nil {
		return -1, err
	}
	select {
	case <-d.done:
		return d.state.ExitCode(), nil
	case <-time.After(timeout):
		return -1, fmt.Errorf("patronusd did not exit within %v of %v", timeout, sig)
	}
}

// wait waits for the process to exit by itself.
func (d *daemon) wait(timeout time.Duration) (int, bool) {
	select {
	case <-d.done:
		return d.state.ExitCode(), true
	case <-time.After(timeout):
		return -1, false
	}
}

// ready dials addr with creds, authenticated as d.creds (adminCreds by
// default), and polls Capabilities until it answers (10 s).
func (d *daemon) ready(addr string, creds credentials.TransportCredentials) error {
	var user credentials.PerRPCCredentials = adminCreds
	if d.creds != nil {
		user = d.creds
	}
	// Wait for the port first: a gRPC client that found it closed would
	// back off for a second before trying again.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if d.exited() {
			return fmt.Errorf("patronusd exited (%v) before serving: %s", d.state, d.stderr.String())
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on %s after 10s: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// TestDiskFull reads back every description it wrote to fill the
	// disk: over 64 MiB in one Get response.
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds), grpc.WithPerRPCCredentials(user),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		return err
	}
	c := gpb.NewGNMIClient(conn)
	var last error
	for time.Now().Before(deadline) {
		if d.exited() {
			conn.Close()
			return fmt.Errorf("patronusd exited (%v) before serving: %s", d.state, d.stderr.String())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		_, last = c.Capabilities(ctx, &gpb.CapabilityRequest{})
		cancel()
		if last == nil {
			d.conn, d.Client = conn, c
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	conn.Close()
	return fmt.Errorf("Capabilities did not answer within 10s: %v", last)
}

// start runs patronusd --insecure on free ports with dir (a new temporary
// directory if empty) and waits until it serves.
func start(t testing.TB, dir string, extra ...string) *daemon {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		addr, haddr := freeAddr(t), freeAddr(t)
		args := append([]string{"--insecure", "--listen", addr, "--http", haddr, "--data-dir", dir, "--node-name", "it-node"}, extra...)
		d := launch(t, fmt.Sprintf("%s#%d", filepath.Base(dir), attempt), args, nil)
		d.Addr, d.HTTP, d.Dir = addr, haddr, dir
		if lastErr = d.ready(addr, insecure.NewCredentials()); lastErr == nil {
			return d
		}
		d.kill()
		if !strings.Contains(d.stderr.String(), "address already in use") {
			break
		}
	}
	t.Fatalf("patronusd did not start: %v", lastErr)
	return nil
}

// ---------------------------------------------------------------------------
// gNMI helpers.

func path(t testing.TB, s string) *gpb.Path {
	t.Helper()
	p, err := ygot.StringToStructuredPath(s)
	if err != nil {
		t.Fatalf("bad path %q: %v", s, err)
	}
	return p
}

func pathStr(prefix, p *gpb.Path) string {
	full := &gpb.Path{Elem: append(append([]*gpb.PathElem{}, prefix.GetElem()...), p.GetElem()...)}
	s, err := ygot.PathToString(full)
	if err != nil {
		return fmt.Sprintf("<bad path %v>", full)
	}
	return s
}

func strVal(s string) *gpb.TypedValue {
	return &gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: s}}
}

func ietf(b []byte) *gpb.TypedValue {
	return &gpb.TypedValue{Value: &gpb.TypedValue_JsonIetfVal{JsonIetfVal: b}}
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func readScenario(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(scenarioConfig)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// loadScenario sets scenario 1 as an update of the root in JSON_IETF.
func loadScenario(t testing.TB, c gpb.GNMIClient) {
	t.Helper()
	_, err := c.Set(ctxT(t, 10*time.Second), &gpb.SetRequest{
		Update: []*gpb.Update{{Path: &gpb.Path{}, Val: ietf(readScenario(t))}},
	})
	if err != nil {
		t.Fatalf("Set scenario 1: %v", err)
	}
}

func setLeaf(ctx context.Context, c gpb.GNMIClient, p *gpb.Path, v *gpb.TypedValue) error {
	_, err := c.Set(ctx, &gpb.SetRequest{Update: []*gpb.Update{{Path: p, Val: v}}})
	return err
}

// retryIdempotent runs set, which must be idempotent (writing the same
// value again changes nothing), again while it fails with UNAVAILABLE: an
// election on a loaded machine makes the outcome of a Set in flight
// unknown, and a client that can repeat its write safely does so.
func retryIdempotent(ctx context.Context, set func() error) error {
	for {
		err := set()
		if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func get(t testing.TB, c gpb.GNMIClient, req *gpb.GetRequest) *gpb.GetResponse {
	t.Helper()
	resp, err := c.Get(ctxT(t, 10*time.Second), req)
	if err != nil {
		t.Fatalf("Get %v: %v", req, err)
	}
	return resp
}

// updates flattens a GetResponse into path string -> value.
func updates(resp *gpb.GetResponse) map[string]*gpb.TypedValue {
	out := map[string]*gpb.TypedValue{}
	for _, n := range resp.GetNotification() {
		for _, u := range n.GetUpdate() {
			out[pathStr(n.GetPrefix(), u.GetPath())] = u.GetVal()
		}
	}
	return out
}

func wantCode(t testing.TB, err error, code codes.Code, mention string) {
	t.Helper()
	if err == nil {
		t.Errorf("got no error, want %v mentioning %q", code, mention)
		return
	}
	st, _ := status.FromError(err)
	if st.Code() != code {
		t.Errorf("got %v, want code %v", err, code)
	}
	if !strings.Contains(st.Message(), mention) {
		t.Errorf("error %q does not mention %q", st.Message(), mention)
	}
}

// jsonKeys lists every object member name anywhere in a JSON document.
func jsonKeys(v any, out map[string]bool) {
	switch x := v.(type) {
	case map[string]any:
		for k, c := range x {
			if i := strings.LastIndexByte(k, ':'); i >= 0 {
				k = k[i+1:]
			}
			out[k] = true
			jsonKeys(c, out)
		}
	case []any:
		for _, c := range x {
			jsonKeys(c, out)
		}
	}
}

// ---------------------------------------------------------------------------
// ygot comparison helpers.

// unmarshalDevice decodes a JSON_IETF document for the root.
func unmarshalDevice(t testing.TB, doc []byte) *model.Device {
	t.Helper()
	d := &model.Device{}
	if err := model.Unmarshal(doc, d); err != nil {
		t.Fatalf("model.Unmarshal: %v\n%s", err, doc)
	}
	return d
}

// pruneState removes every State container (and containers left empty) so
// that only configuration remains. It reports whether v is now empty.
func pruneState(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return true
		}
		if v.Elem().Kind() != reflect.Struct {
			return false
		}
		if pruneState(v.Elem()) {
			v.Set(reflect.Zero(v.Type()))
			return true
		}
		return false
	case reflect.Struct:
		empty := true
		for i := 0; i < v.NumField(); i++ {
			f := v.Field(i)
			if !f.CanSet() {
				empty = false
				continue
			}
			if v.Type().Field(i).Name == "State" && f.Kind() == reflect.Pointer {
				f.Set(reflect.Zero(f.Type()))
				continue
			}
			switch f.Kind() {
			case reflect.Pointer:
				if f.IsNil() {
					continue
				}
				if f.Elem().Kind() == reflect.Struct {
					if !pruneState(f) {
						empty = false
					}
				} else {
					empty = false
				}
			case reflect.Map:
				for _, k := range f.MapKeys() {
					pruneState(f.MapIndex(k))
				}
				if f.Len() > 0 {
					empty = false
				}
			default:
				if !f.IsZero() {
					empty = false
				}
			}
		}
		return empty
	}
	return false
}

// ---------------------------------------------------------------------------
// Subscribe helpers.

type subMsg struct {
	resp *gpb.SubscribeResponse
	err  error
}

type subscription struct {
	stream gpb.GNMI_SubscribeClient
	ch     chan subMsg
	cancel context.CancelFunc
}

func subscribe(t testing.TB, c gpb.GNMIClient, list *gpb.SubscriptionList, ext ...*gnmi_ext.Extension) *subscription {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := c.Subscribe(ctx)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	if err := st.Send(&gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: list}, Extension: ext}); err != nil {
		t.Fatalf("Subscribe send: %v", err)
	}
	s := &subscription{stream: st, ch: make(chan subMsg, 10000), cancel: cancel}
	go func() {
		for {
			r, err := st.Recv()
			s.ch <- subMsg{r, err}
			if err != nil {
				close(s.ch)
				return
			}
		}
	}()
	return s
}

// next returns the next response or error; ok is false on timeout.
func (s *subscription) next(d time.Duration) (*gpb.SubscribeResponse, error, bool) {
	select {
	case m, open := <-s.ch:
		if !open {
			return nil, io.EOF, true
		}
		return m.resp, m.err, true
	case <-time.After(d):
		return nil, nil, false
	}
}

type leafUpdate struct {
	path string
	val  *gpb.TypedValue
}

// untilSync reads notifications until sync_response and returns the
// updates and deletes seen.
func (s *subscription) untilSync(t testing.TB, d time.Duration) (ups []leafUpdate, dels []string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		r, err, ok := s.next(time.Until(deadline))
		if !ok {
			t.Fatalf("no sync_response within %v (got %d updates)", d, len(ups))
		}
		if err != nil {
			t.Fatalf("stream ended before sync_response: %v", err)
		}
		if r.GetSyncResponse() {
			return ups, dels
		}
		u, dl := flatten(r)
		ups, dels = append(ups, u...), append(dels, dl...)
	}
}

// collect reads for d and returns everything seen; a stream error fails.
func (s *subscription) collect(t testing.TB, d time.Duration) (ups []leafUpdate, dels []string, syncs int) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		r, err, ok := s.next(time.Until(deadline))
		if !ok {
			break
		}
		if err != nil {
			t.Fatalf("stream ended: %v", err)
		}
		if r.GetSyncResponse() {
			syncs++
			continue
		}
		u, dl := flatten(r)
		ups, dels = append(ups, u...), append(dels, dl...)
	}
	return ups, dels, syncs
}

func flatten(r *gpb.SubscribeResponse) (ups []leafUpdate, dels []string) {
	n := r.GetUpdate()
	for _, u := range n.GetUpdate() {
		ups = append(ups, leafUpdate{pathStr(n.GetPrefix(), u.GetPath()), u.GetVal()})
	}
	for _, d := range n.GetDelete() {
		dels = append(dels, pathStr(n.GetPrefix(), d))
	}
	return ups, dels
}

func sub(t testing.TB, p string, mode gpb.SubscriptionMode, interval time.Duration) *gpb.Subscription {
	return &gpb.Subscription{Path: path(t, p), Mode: mode, SampleInterval: uint64(interval)}
}

// ---------------------------------------------------------------------------
// 1. Scenario round trip.

const inetBW = "/sites/site[name=hq]/endpoints/endpoint[name=inet]/config/bandwidth"

func TestScenarioRoundTrip(t *testing.T) {
	t.Parallel()
	d := start(t, "")
	c := d.Client
	loadScenario(t, c)

	t.Run("ygot", func(t *testing.T) {
		doc := map[string]json.RawMessage{}
		for _, top := range []struct{ path, module string }{{"/sites", "patronus-sites"}, {"/paths", "patronus-paths"}, {"/policies", "patronus-policies"}} {
			resp := get(t, c, &gpb.GetRequest{Path: []*gpb.Path{path(t, top.path)}, Encoding: gpb.Encoding_JSON_IETF})
			if n := len(resp.GetNotification()); n != 1 {
				t.Fatalf("Get %s: %d notifications, want 1", top.path, n)
			}
			ups := resp.GetNotification()[0].GetUpdate()
			if len(ups) != 1 {
				t.Fatalf("Get %s: %d updates, want 1", top.path, len(ups))
			}
			if p := pathStr(resp.GetNotification()[0].GetPrefix(), ups[0].GetPath()); p != top.path {
				t.Errorf("Get %s: update path %s", top.path, p)
			}
			raw := ups[0].GetVal().GetJsonIetfVal()
			if raw == nil {
				t.Fatalf("Get %s: value is %T, want json_ietf_val", top.path, ups[0].GetVal().GetValue())
			}
			doc[top.module+":"+top.path[1:]] = raw
		}
		b, _ := json.Marshal(doc)
		got := unmarshalDevice(t, b)

		// State mirrors config, and the port default shows in both.
		sites := got.GetSites().Site
		if len(sites) != 3 {
			t.Fatalf("%d sites, want 3", len(sites))
		}
		endpoints := 0
		for name, s := range sites {
			if s.GetState().GetName() != name || s.GetState().GetLocation() != s.GetConfig().GetLocation() {
				t.Errorf("site %s: state %+v does not mirror config %+v", name, s.GetState(), s.GetConfig())
			}
			for en, e := range s.GetEndpoints().Endpoint {
				endpoints++
				if e.GetConfig().GetPort() != 4784 || e.GetState().GetPort() != 4784 {
					t.Errorf("site %s endpoint %s: port config %d state %d, want the default 4784 in both", name, en, e.GetConfig().GetPort(), e.GetState().GetPort())
				}
				if e.GetState().GetBandwidth() != e.GetConfig().GetBandwidth() || e.GetState().GetAddress() != e.GetConfig().GetAddress() {
					t.Errorf("site %s endpoint %s: state does not mirror config", name, en)
				}
			}
		}
		if endpoints != 6 {
			t.Errorf("%d endpoints, want 6", endpoints)
		}
		if n := len(got.GetPaths().Path); n != 8 {
			t.Errorf("%d paths, want 8", n)
		}
		if n := len(got.GetPolicies().Policy); n != 6 {
			t.Errorf("%d policies, want 6", n)
		}
		if p := got.GetPaths().GetPath("hq-inet--branch-2-lte"); p.GetConfig().GetProbeInterval() != 200 || !p.GetConfig().GetEnabled() {
			t.Errorf("path hq-inet--branch-2-lte: probe-interval %d enabled %v, want defaults 200 true", p.GetConfig().GetProbeInterval(), p.GetConfig().GetEnabled())
		}
		if got, want := got.GetPolicies().GetPolicy("voice-sip").GetAction().GetConfig().Paths, []string{"hq-mpls--branch-1-mpls", "hq-inet--branch-1-inet"}; !reflect.DeepEqual(got, want) {
			t.Errorf("voice-sip action paths %v, want %v (ordered-by user)", got, want)
		}

		// Configuration equals what was sent, plus the schema defaults.
		want := unmarshalDevice(t, readScenario(t))
		want.PopulateDefaults()
		pruneState(reflect.ValueOf(want))
		pruneState(reflect.ValueOf(got))
		for _, c := range []struct {
			name      string
			want, got any
		}{{"sites", want.Sites, got.Sites}, {"paths", want.Paths, got.Paths}, {"policies", want.Policies, got.Policies}} {
			if diff := cmp.Diff(c.want, c.got); diff != "" {
				t.Errorf("%s config differs from config.json (-want +got):\n%s", c.name, diff)
			}
		}
	})

	t.Run("encodings", func(t *testing.T) {
		for _, tc := range []struct {
			enc  gpb.Encoding
			path string
			want func(*gpb.TypedValue) string // "" if fine
		}{
			{gpb.Encoding_PROTO, inetBW, func(v *gpb.TypedValue) string {
				if x, ok := v.GetValue().(*gpb.TypedValue_UintVal); !ok || x.UintVal != 1000000 {
					return fmt.Sprintf("want uint_val 1000000, got %v", v)
				}
				return ""
			}},
			{gpb.Encoding_PROTO, "/sites/site[name=hq]/endpoints/endpoint[name=inet]/config/port", func(v *gpb.TypedValue) string {
				if x, ok := v.GetValue().(*gpb.TypedValue_UintVal); !ok || x.UintVal != 4784 {
					return fmt.Sprintf("want uint_val 4784, got %v", v)
				}
				return ""
			}},
			{gpb.Encoding_PROTO, "/sites/site[name=hq]/endpoints/endpoint[name=inet]/state/port", func(v *gpb.TypedValue) string {
				if x, ok := v.GetValue().(*gpb.TypedValue_UintVal); !ok || x.UintVal != 4784 {
					return fmt.Sprintf("want uint_val 4784, got %v", v)
				}
				return ""
			}},
			{gpb.Encoding_PROTO, "/sites/site[name=hq]/endpoints/endpoint[name=inet]/config/transport", func(v *gpb.TypedValue) string {
				if v.GetStringVal() != "INTERNET" {
					return fmt.Sprintf("want string_val INTERNET, got %v", v)
				}
				return ""
			}},
			{gpb.Encoding_JSON, inetBW, func(v *gpb.TypedValue) string {
				raw := v.GetJsonVal()
				var n any
				if err := json.Unmarshal(raw, &n); err != nil {
					return fmt.Sprintf("json_val %q: %v", raw, err)
				}
				if f, ok := n.(float64); !ok || f != 1000000 {
					return fmt.Sprintf("want the JSON number 1000000, got json_val %s", raw)
				}
				return ""
			}},
			{gpb.Encoding_JSON_IETF, inetBW, func(v *gpb.TypedValue) string {
				if raw := v.GetJsonIetfVal(); strings.TrimSpace(string(raw)) != `"1000000"` {
					return fmt.Sprintf(`want json_ietf_val "1000000" (uint64 as a string), got %q (%v)`, raw, v)
				}
				return ""
			}},
		} {
			resp := get(t, c, &gpb.GetRequest{Path: []*gpb.Path{path(t, tc.path)}, Encoding: tc.enc})
			ups := updates(resp)
			v, ok := ups[tc.path]
			if !ok || len(ups) != 1 {
				t.Errorf("Get %s %v: updates %v, want exactly that leaf", tc.path, tc.enc, ups)
				continue
			}
			if msg := tc.want(v); msg != "" {
				t.Errorf("Get %s %v: %s", tc.path, tc.enc, msg)
			}
		}
	})

	t.Run("type", func(t *testing.T) {
		for _, tc := range []struct {
			typ          gpb.GetRequest_DataType
			want, forbid string
		}{
			{gpb.GetRequest_CONFIG, "config", "state"},
			{gpb.GetRequest_STATE, "state", "config"},
		} {
			for _, enc := range []gpb.Encoding{gpb.Encoding_JSON_IETF, gpb.Encoding_PROTO} {
				resp := get(t, c, &gpb.GetRequest{Path: []*gpb.Path{path(t, "/sites/site[name=hq]")}, Encoding: enc, Type: tc.typ})
				seen := map[string]bool{}
				for p, v := range updates(resp) {
					if enc == gpb.Encoding_PROTO {
						for _, e := range path(t, p).GetElem() {
							seen[e.GetName()] = true
						}
						continue
					}
					var doc any
					if err := json.Unmarshal(v.GetJsonIetfVal(), &doc); err != nil {
						t.Fatalf("%v: %v", p, err)
					}
					jsonKeys(doc, seen)
				}
				if !seen[tc.want] || !seen["endpoints"] {
					t.Errorf("Get type %v %v: members %v lack %q or endpoints", tc.typ, enc, keys(seen), tc.want)
				}
				if seen[tc.forbid] {
					t.Errorf("Get type %v %v: returned %q members: %v", tc.typ, enc, tc.forbid, keys(seen))
				}
			}
		}
	})

	t.Run("wildcards", func(t *testing.T) {
		resp := get(t, c, &gpb.GetRequest{Path: []*gpb.Path{path(t, "/sites/site[name=*]/config/location")}, Encoding: gpb.Encoding_JSON_IETF})
		ups := updates(resp)
		want := map[string]string{
			"/sites/site[name=hq]/config/location":       `"Frankfurt"`,
			"/sites/site[name=branch-1]/config/location": `"Lisbon"`,
			"/sites/site[name=branch-2]/config/location": `"Austin"`,
		}
		if n := len(resp.GetNotification()[0].GetUpdate()); n != 3 {
			t.Errorf("wildcard Get: %d updates, want 3: %v", n, ups)
		}
		for p, v := range want {
			if got := string(ups[p].GetJsonIetfVal()); got != v {
				t.Errorf("wildcard Get %s = %s, want %s", p, got, v)
			}
		}

		resp = get(t, c, &gpb.GetRequest{Path: []*gpb.Path{path(t, "/policies/.../destination-port")}, Encoding: gpb.Encoding_JSON_IETF})
		ups = updates(resp)
		cfg := map[string]string{}
		for p, v := range ups {
			elems := path(t, p).GetElem()
			if last := elems[len(elems)-1].GetName(); last != "destination-port" {
				t.Errorf("... Get returned %s, not a destination-port leaf", p)
			}
			if strings.HasSuffix(p, "/match/config/destination-port") {
				cfg[elems[1].GetKey()["name"]] = string(v.GetJsonIetfVal())
			}
		}
		wantPorts := map[string]string{"voice-sip": `"5060..5061"`, "video": `"3478..3481"`, "block-telnet": `"23"`, "bulk": `"445"`}
		if diff := cmp.Diff(wantPorts, cfg); diff != "" {
			t.Errorf("... Get destination-port config leaves (-want +got):\n%s", diff)
		}
	})

	t.Run("depth", func(t *testing.T) {
		depthExt := func(l uint32) []*gnmi_ext.Extension {
			return []*gnmi_ext.Extension{{Ext: &gnmi_ext.Extension_Depth{Depth: &gnmi_ext.Depth{Level: l}}}}
		}
		for _, enc := range []gpb.Encoding{gpb.Encoding_PROTO, gpb.Encoding_JSON_IETF} {
			// Level 1: only the leaves directly below the entry, i.e. its key.
			resp, err := c.Get(ctxT(t, 5*time.Second), &gpb.GetRequest{Path: []*gpb.Path{path(t, "/sites/site[name=hq]")}, Encoding: enc, Extension: depthExt(1)})
			if err != nil {
				t.Errorf("Get depth 1 %v: %v; want the entry's key leaf name", enc, err)
			} else {
				leaves := leafNames(t, resp, enc)
				if !reflect.DeepEqual(leaves, []string{"name"}) {
					t.Errorf("Get depth 1 %v: leaves %v, want [name]", enc, leaves)
				}
			}
			// Level 2: config/ and state/ leaves, nothing from endpoints.
			resp, err = c.Get(ctxT(t, 5*time.Second), &gpb.GetRequest{Path: []*gpb.Path{path(t, "/sites/site[name=hq]")}, Encoding: enc, Extension: depthExt(2)})
			if err != nil {
				t.Errorf("Get depth 2 %v: %v", enc, err)
				continue
			}
			leaves := leafNames(t, resp, enc)
			has := map[string]bool{}
			for _, l := range leaves {
				has[l] = true
				if strings.HasPrefix(l, "endpoints") {
					t.Errorf("Get depth 2 %v: returned %s below endpoints", enc, l)
				}
			}
			for _, w := range []string{"config/name", "config/location", "state/name", "state/location"} {
				if !has[w] {
					t.Errorf("Get depth 2 %v: leaves %v lack %s", enc, leaves, w)
				}
			}
		}
	})

	t.Run("depth-list", func(t *testing.T) {
		// Depth 2 on /sites: the list entries' direct leaves, i.e. their keys.
		resp, err := c.Get(ctxT(t, 5*time.Second), &gpb.GetRequest{Path: []*gpb.Path{path(t, "/sites")}, Encoding: gpb.Encoding_PROTO,
			Extension: []*gnmi_ext.Extension{{Ext: &gnmi_ext.Extension_Depth{Depth: &gnmi_ext.Depth{Level: 2}}}}})
		if err != nil {
			t.Fatalf("Get /sites depth 2: %v; want the three sites' name leaves", err)
		}
		var got []string
		for p := range updates(resp) {
			got = append(got, p)
		}
		sort.Strings(got)
		want := []string{"/sites/site[name=branch-1]/name", "/sites/site[name=branch-2]/name", "/sites/site[name=hq]/name"}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Get /sites depth 2: %v, want %v", got, want)
		}
	})

	t.Run("errors", func(t *testing.T) {
		_, err := c.Get(ctxT(t, 5*time.Second), &gpb.GetRequest{Path: []*gpb.Path{path(t, "/sites/site[name=hq]/config/description")}, Encoding: gpb.Encoding_JSON_IETF})
		wantCode(t, err, codes.NotFound, "/sites/site[name=hq]/config/description")
		_, err = c.Get(ctxT(t, 5*time.Second), &gpb.GetRequest{Path: []*gpb.Path{path(t, "/sites/site[name=nowhere]")}, Encoding: gpb.Encoding_PROTO})
		wantCode(t, err, codes.NotFound, "nowhere")
		_, err = c.Get(ctxT(t, 5*time.Second), &gpb.GetRequest{Path: []*gpb.Path{path(t, "/nope")}, Encoding: gpb.Encoding_JSON_IETF})
		wantCode(t, err, codes.InvalidArgument, "nope")
		_, err = c.Get(ctxT(t, 5*time.Second), &gpb.GetRequest{Path: []*gpb.Path{path(t, "/sites/site[name=hq]/config/nope")}, Encoding: gpb.Encoding_JSON_IETF})
		wantCode(t, err, codes.InvalidArgument, "nope")
	})

	t.Run("target", func(t *testing.T) {
		resp := get(t, c, &gpb.GetRequest{
			Prefix:   &gpb.Path{Target: "it-target", Elem: path(t, "/sites/site[name=hq]").GetElem()},
			Path:     []*gpb.Path{path(t, "/config/location")},
			Encoding: gpb.Encoding_JSON_IETF,
		})
		if len(resp.GetNotification()) != 1 {
			t.Fatalf("%d notifications, want 1", len(resp.GetNotification()))
		}
		n := resp.GetNotification()[0]
		if n.GetPrefix().GetTarget() != "it-target" {
			t.Errorf("notification prefix %v does not echo target it-target", n.GetPrefix())
		}
		ups := updates(resp)
		if v := ups["/sites/site[name=hq]/config/location"]; string(v.GetJsonIetfVal()) != `"Frankfurt"` {
			t.Errorf("prefixed Get: %v, want /sites/site[name=hq]/config/location = \"Frankfurt\" (prefix + path)", ups)
		}
		if n.GetTimestamp() == 0 {
			t.Error("notification has no timestamp")
		}
	})
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// leafNames lists the leaves of a Get response for one list entry, relative
// to the entry, e.g. "config/name".
func leafNames(t testing.TB, resp *gpb.GetResponse, enc gpb.Encoding) []string {
	t.Helper()
	const base = "/sites/site[name=hq]"
	var out []string
	for p, v := range updates(resp) {
		if !strings.HasPrefix(p, base) {
			t.Errorf("update %s is not below %s", p, base)
			continue
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(p, base), "/")
		if enc == gpb.Encoding_PROTO {
			out = append(out, rel)
			continue
		}
		var doc any
		if err := json.Unmarshal(v.GetJsonIetfVal(), &doc); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		var walk func(prefix string, v any)
		walk = func(prefix string, v any) {
			m, ok := v.(map[string]any)
			if !ok {
				out = append(out, prefix)
				return
			}
			for k, c := range m {
				if i := strings.LastIndexByte(k, ':'); i >= 0 {
					k = k[i+1:]
				}
				walk(strings.TrimPrefix(prefix+"/"+k, "/"), c)
			}
		}
		walk(rel, doc)
	}
	sort.Strings(out)
	return out
}

// ---------------------------------------------------------------------------
// 2. gnmi_cli.

func TestGnmiCLI(t *testing.T) {
	t.Parallel()
	if gnmiCLIErr != nil {
		t.Fatal(gnmiCLIErr)
	}
	d := start(t, "")
	loadScenario(t, d.Client)
	logDir := t.TempDir()
	cli := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		// gnmi_cli takes the credentials from GNMI_USER and GNMI_PASS
		// with -with_user_pass, and sends them as "username"/"password".
		all := append([]string{"-a", d.Addr, "-insecure", "-timeout", "5s", "-log_dir", logDir, "-with_user_pass"}, args...)
		cmd := exec.CommandContext(ctx, gnmiCLIBin, all...)
		cmd.Env = append(os.Environ(), "GNMI_USER=admin", "GNMI_PASS="+testAdminPassword)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("gnmi_cli %q: %v\n%s", all, err, out)
		}
		return string(out)
	}
	// Without credentials, and with a wrong password, nothing is served.
	for _, env := range [][]string{nil, {"GNMI_USER=admin", "GNMI_PASS=wrong"}} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		args := []string{"-a", d.Addr, "-insecure", "-timeout", "5s", "-log_dir", logDir, "-capabilities"}
		if env != nil {
			args = append(args, "-with_user_pass")
		}
		cmd := exec.CommandContext(ctx, gnmiCLIBin, args...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		cancel()
		if err == nil || !strings.Contains(string(out), "Unauthenticated") {
			t.Errorf("gnmi_cli -capabilities with env %q: %v, want an Unauthenticated failure:\n%s", env, err, out)
		}
	}
	const descPath = `path:{elem:{name:"sites"} elem:{name:"site" key:{key:"name" value:"hq"}} elem:{name:"config"} elem:{name:"description"}}`

	out := cli("-capabilities")
	for _, want := range []string{"patronus-sites", "patronus-paths", "patronus-policies", "JSON_IETF", "PROTO", "gNMI_version"} {
		if !strings.Contains(out, want) {
			t.Errorf("capabilities output lacks %q:\n%s", want, out)
		}
	}

	out = cli("-set", "-proto", `update:{`+descPath+` val:{string_val:"HQ"}}`)
	if !strings.Contains(out, "UPDATE") || !strings.Contains(out, "description") {
		t.Errorf("set output lacks an UPDATE result for description:\n%s", out)
	}
	resp := get(t, d.Client, &gpb.GetRequest{Path: []*gpb.Path{path(t, "/sites/site[name=hq]/config/description")}, Encoding: gpb.Encoding_PROTO})
	if v := updates(resp)["/sites/site[name=hq]/config/description"]; v.GetStringVal() != "HQ" {
		t.Errorf("after gnmi_cli set, Get description = %v, want HQ", v)
	}

	out = cli("-get", "-proto", descPath+` encoding:JSON_IETF`)
	if !strings.Contains(out, `\"HQ\"`) && !strings.Contains(out, `"HQ"`) {
		t.Errorf("get output lacks \"HQ\":\n%s", out)
	}
	out = cli("-get", "-proto", descPath+` encoding:PROTO`)
	if !strings.Contains(out, `string_val:"HQ"`) && !strings.Contains(out, `string_val: "HQ"`) {
		t.Errorf("PROTO get output lacks string_val \"HQ\":\n%s", out)
	}

	out = cli("-qt", "once", "-q", "sites/site[name=*]/config/description,sites/site[name=branch-1]/config/location", "-dt", "single")
	if !strings.Contains(out, "HQ") || !strings.Contains(out, "Lisbon") {
		t.Errorf("subscribe once output lacks HQ and Lisbon:\n%s", out)
	}
	if !strings.Contains(out, "description") {
		t.Errorf("subscribe once output lacks the description path:\n%s", out)
	}
}

// ---------------------------------------------------------------------------
// 3. Subscribe modes.

func TestSubscribeModes(t *testing.T) {
	t.Parallel()
	// Each subtest runs its own daemon with scenario 1 loaded.
	setup := func(t *testing.T) gpb.GNMIClient {
		t.Parallel()
		d := start(t, "")
		loadScenario(t, d.Client)
		return d.Client
	}
	const hqDesc = "/sites/site[name=hq]/config/description"
	const hqLoc = "/sites/site[name=hq]/config/location"

	t.Run("once", func(t *testing.T) {
		c := setup(t)
		s := subscribe(t, c, &gpb.SubscriptionList{Mode: gpb.SubscriptionList_ONCE, Encoding: gpb.Encoding_PROTO,
			Subscription: []*gpb.Subscription{{Path: path(t, "/sites/site[name=*]/config/location")}}})
		ups, _ := s.untilSync(t, 5*time.Second)
		got := map[string]string{}
		for _, u := range ups {
			got[u.path] = u.val.GetStringVal()
		}
		want := map[string]string{hqLoc: "Frankfurt", "/sites/site[name=branch-1]/config/location": "Lisbon", "/sites/site[name=branch-2]/config/location": "Austin"}
		if diff := cmp.Diff(want, got); diff != "" || len(ups) != 3 {
			t.Errorf("ONCE updates (-want +got):\n%s (%d updates)", diff, len(ups))
		}
		r, err, ok := s.next(5 * time.Second)
		if !ok || !errors.Is(err, io.EOF) {
			t.Errorf("after sync_response: got %v, %v (timed out: %v), want EOF", r, err, !ok)
		}
	})

	t.Run("poll", func(t *testing.T) {
		c := setup(t)
		s := subscribe(t, c, &gpb.SubscriptionList{Mode: gpb.SubscriptionList_POLL, Encoding: gpb.Encoding_JSON_IETF,
			Subscription: []*gpb.Subscription{{Path: path(t, hqLoc)}}})
		ups, _ := s.untilSync(t, 5*time.Second)
		if len(ups) != 1 || ups[0].path != hqLoc || string(ups[0].val.GetJsonIetfVal()) != `"Frankfurt"` {
			t.Errorf("POLL initial data %v, want %s = \"Frankfurt\"", ups, hqLoc)
		}
		if _, _, syncs := s.collect(t, 300*time.Millisecond); syncs != 0 {
			t.Errorf("POLL sent %d sync_responses without a Poll", syncs)
		}
		for i, loc := range []string{"Berlin", "Paris"} {
			if err := setLeaf(ctxT(t, 5*time.Second), c, path(t, hqLoc), strVal(loc)); err != nil {
				t.Fatal(err)
			}
			if err := s.stream.Send(&gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Poll{Poll: &gpb.Poll{}}}); err != nil {
				t.Fatal(err)
			}
			ups, _ := s.untilSync(t, 5*time.Second)
			if len(ups) != 1 || string(ups[0].val.GetJsonIetfVal()) != `"`+loc+`"` {
				t.Errorf("poll %d: updates %v, want %s = %q", i+1, ups, hqLoc, loc)
			}
		}
		s.stream.CloseSend()
		if _, err, ok := s.next(5 * time.Second); !ok || !errors.Is(err, io.EOF) {
			t.Errorf("after CloseSend: %v (timed out %v), want EOF", err, !ok)
		}
	})

	t.Run("on-change", func(t *testing.T) {
		c := setup(t)
		s := subscribe(t, c, &gpb.SubscriptionList{Mode: gpb.SubscriptionList_STREAM, Encoding: gpb.Encoding_PROTO,
			Subscription: []*gpb.Subscription{sub(t, "/sites/site[name=hq]/config", gpb.SubscriptionMode_ON_CHANGE, 0)}})
		ups, _ := s.untilSync(t, 5*time.Second)
		got := map[string]string{}
		for _, u := range ups {
			got[u.path] = u.val.GetStringVal()
		}
		if want := (map[string]string{"/sites/site[name=hq]/config/name": "hq", hqLoc: "Frankfurt"}); !reflect.DeepEqual(got, want) {
			t.Errorf("initial data %v, want %v", got, want)
		}
		if err := setLeaf(ctxT(t, 5*time.Second), c, path(t, hqDesc), strVal("head office")); err != nil {
			t.Fatal(err)
		}
		ups, dels, syncs := s.collect(t, 700*time.Millisecond)
		if len(ups) != 1 || ups[0].path != hqDesc || ups[0].val.GetStringVal() != "head office" || len(dels) != 0 || syncs != 0 {
			t.Errorf("after Set: updates %v deletes %v syncs %d, want exactly %s = head office", ups, dels, syncs, hqDesc)
		}
		// A Set elsewhere sends nothing.
		if err := setLeaf(ctxT(t, 5*time.Second), c, path(t, "/sites/site[name=branch-1]/config/description"), strVal("b1")); err != nil {
			t.Fatal(err)
		}
		if ups, dels, _ := s.collect(t, 400*time.Millisecond); len(ups)+len(dels) != 0 {
			t.Errorf("a Set outside the subscription sent %v %v", ups, dels)
		}
	})

	t.Run("cascade-deletes", func(t *testing.T) {
		c := setup(t)
		s := subscribe(t, c, &gpb.SubscriptionList{Mode: gpb.SubscriptionList_STREAM, Encoding: gpb.Encoding_JSON_IETF, UpdatesOnly: true,
			Subscription: []*gpb.Subscription{
				sub(t, "/sites", gpb.SubscriptionMode_ON_CHANGE, 0),
				sub(t, "/paths", gpb.SubscriptionMode_ON_CHANGE, 0),
			}})
		if ups, _ := s.untilSync(t, 5*time.Second); len(ups) != 0 {
			t.Errorf("updates_only sent %d updates before sync_response", len(ups))
		}
		if _, err := c.Set(ctxT(t, 5*time.Second), &gpb.SetRequest{Delete: []*gpb.Path{path(t, "/sites/site[name=branch-2]")}}); err != nil {
			t.Fatal(err)
		}
		var dels []string
		deadline := time.Now().Add(3 * time.Second)
		wantLeaves := []string{
			"/sites/site[name=branch-2]/config/name",
			"/sites/site[name=branch-2]/config/location",
			"/sites/site[name=branch-2]/state/location",
			"/sites/site[name=branch-2]/endpoints/endpoint[name=lte]/config/address",
			"/sites/site[name=branch-2]/endpoints/endpoint[name=lte]/state/port",
		}
		cascaded := []string{"hq-inet--branch-2-inet", "branch-2-inet--hq-inet", "hq-inet--branch-2-lte", "branch-2-lte--hq-inet"}
		for _, p := range cascaded {
			wantLeaves = append(wantLeaves, "/paths/path[name="+p+"]/config/name", "/paths/path[name="+p+"]/config/source-site", "/paths/path[name="+p+"]/state/destination-endpoint")
		}
		complete := func() bool {
			set := map[string]bool{}
			for _, d := range dels {
				set[d] = true
			}
			for _, w := range wantLeaves {
				if !set[w] {
					return false
				}
			}
			return true
		}
		var ups []leafUpdate
		for !complete() && time.Now().Before(deadline) {
			u, dl, _ := s.collect(t, 200*time.Millisecond)
			ups, dels = append(ups, u...), append(dels, dl...)
		}
		u, dl, _ := s.collect(t, 300*time.Millisecond)
		ups, dels = append(ups, u...), append(dels, dl...)
		set := map[string]bool{}
		for _, d := range dels {
			set[d] = true
			if !strings.Contains(d, "branch-2") {
				t.Errorf("delete notification for %s, which does not involve branch-2", d)
			}
		}
		for _, w := range wantLeaves {
			if !set[w] {
				t.Errorf("no delete notification for %s", w)
			}
		}
		if len(ups) != 0 {
			t.Errorf("deleting a site sent updates: %v", ups)
		}
		// The remaining configuration is intact.
		resp := get(t, c, &gpb.GetRequest{Path: []*gpb.Path{path(t, "/paths/path[name=*]/config/name")}, Encoding: gpb.Encoding_PROTO})
		if n := len(updates(resp)); n != 4 {
			t.Errorf("%d paths left after deleting branch-2, want 4", n)
		}
	})

	t.Run("cascade-endpoint-into-policies", func(t *testing.T) {
		c := setup(t)
		s := subscribe(t, c, &gpb.SubscriptionList{Mode: gpb.SubscriptionList_STREAM, Encoding: gpb.Encoding_JSON_IETF, UpdatesOnly: true,
			Subscription: []*gpb.Subscription{
				sub(t, "/policies/policy[name=*]/action/config/paths", gpb.SubscriptionMode_ON_CHANGE, 0),
				sub(t, "/paths/path[name=*]/config/name", gpb.SubscriptionMode_ON_CHANGE, 0),
			}})
		s.untilSync(t, 5*time.Second)
		if _, err := c.Set(ctxT(t, 5*time.Second), &gpb.SetRequest{Delete: []*gpb.Path{path(t, "/sites/site[name=branch-1]/endpoints/endpoint[name=mpls]")}}); err != nil {
			t.Fatal(err)
		}
		ups, dels, _ := s.collect(t, time.Second)
		got := map[string]string{}
		for _, u := range ups {
			got[u.path] = string(u.val.GetJsonIetfVal())
		}
		const inetOnly = `["hq-inet--branch-1-inet"]`
		want := map[string]string{
			"/policies/policy[name=voice-sip]/action/config/paths": inetOnly,
			"/policies/policy[name=voice-rtp]/action/config/paths": inetOnly,
			"/policies/policy[name=video]/action/config/paths":     inetOnly,
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("policy action paths after deleting endpoint branch-1/mpls (-want +got):\n%s", diff)
		}
		sort.Strings(dels)
		wantDels := []string{"/paths/path[name=branch-1-mpls--hq-mpls]/config/name", "/paths/path[name=hq-mpls--branch-1-mpls]/config/name"}
		if !reflect.DeepEqual(dels, wantDels) {
			t.Errorf("deletes %v, want %v", dels, wantDels)
		}
	})

	t.Run("updates-only", func(t *testing.T) {
		c := setup(t)
		s := subscribe(t, c, &gpb.SubscriptionList{Mode: gpb.SubscriptionList_STREAM, Encoding: gpb.Encoding_JSON, UpdatesOnly: true,
			Subscription: []*gpb.Subscription{sub(t, "/sites/site[name=hq]", gpb.SubscriptionMode_ON_CHANGE, 0)}})
		r, err, ok := s.next(5 * time.Second)
		if !ok || err != nil || !r.GetSyncResponse() {
			t.Fatalf("first response %v, %v (timed out %v), want sync_response", r, err, !ok)
		}
		if err := setLeaf(ctxT(t, 5*time.Second), c, path(t, hqLoc), strVal("Munich")); err != nil {
			t.Fatal(err)
		}
		ups, dels, syncs := s.collect(t, 700*time.Millisecond)
		got := map[string]string{}
		for _, u := range ups {
			got[u.path] = string(u.val.GetJsonVal())
		}
		want := map[string]string{hqLoc: `"Munich"`, "/sites/site[name=hq]/state/location": `"Munich"`}
		if !reflect.DeepEqual(got, want) || len(ups) != 2 || len(dels) != 0 || syncs != 0 {
			t.Errorf("updates_only after Set: %v deletes %v syncs %d, want %v", got, dels, syncs, want)
		}
	})

	t.Run("sample", func(t *testing.T) {
		c := setup(t)
		s := subscribe(t, c, &gpb.SubscriptionList{Mode: gpb.SubscriptionList_STREAM, Encoding: gpb.Encoding_PROTO,
			Subscription: []*gpb.Subscription{sub(t, hqLoc, gpb.SubscriptionMode_SAMPLE, 200*time.Millisecond)}})
		start := time.Now()
		ups, _ := s.untilSync(t, 5*time.Second)
		more, _, syncs := s.collect(t, 1500*time.Millisecond-time.Since(start))
		ups = append(ups, more...)
		if len(ups) < 3 {
			t.Errorf("SAMPLE 200ms: %d samples within 1.5 s, want at least 3", len(ups))
		}
		if len(ups) > 10 {
			t.Errorf("SAMPLE 200ms: %d samples within 1.5 s, want at most ~8", len(ups))
		}
		for _, u := range ups {
			if u.path != hqLoc || u.val.GetStringVal() != "Frankfurt" {
				t.Errorf("sample %v, want %s = Frankfurt", u, hqLoc)
			}
		}
		if syncs != 0 {
			t.Errorf("%d extra sync_responses", syncs)
		}
	})

	t.Run("sample-suppress-redundant", func(t *testing.T) {
		c := setup(t)
		s := subscribe(t, c, &gpb.SubscriptionList{Mode: gpb.SubscriptionList_STREAM, Encoding: gpb.Encoding_PROTO,
			Subscription: []*gpb.Subscription{{Path: path(t, hqLoc), Mode: gpb.SubscriptionMode_SAMPLE, SampleInterval: uint64(100 * time.Millisecond), SuppressRedundant: true}}})
		ups, _ := s.untilSync(t, 5*time.Second)
		if len(ups) != 1 || ups[0].val.GetStringVal() != "Frankfurt" {
			t.Errorf("initial data %v, want Frankfurt once", ups)
		}
		if more, _, _ := s.collect(t, 700*time.Millisecond); len(more) != 0 {
			t.Errorf("suppress_redundant re-sent an unchanged value: %v", more)
		}
		if err := setLeaf(ctxT(t, 5*time.Second), c, path(t, hqLoc), strVal("Hamburg")); err != nil {
			t.Fatal(err)
		}
		more, _, _ := s.collect(t, 700*time.Millisecond)
		if len(more) != 1 || more[0].val.GetStringVal() != "Hamburg" {
			t.Errorf("after a change: %v, want Hamburg exactly once", more)
		}
	})

	t.Run("sample-heartbeat", func(t *testing.T) {
		c := setup(t)
		s := subscribe(t, c, &gpb.SubscriptionList{Mode: gpb.SubscriptionList_STREAM, Encoding: gpb.Encoding_PROTO,
			Subscription: []*gpb.Subscription{{Path: path(t, hqLoc), Mode: gpb.SubscriptionMode_SAMPLE, SampleInterval: uint64(100 * time.Millisecond),
				SuppressRedundant: true, HeartbeatInterval: uint64(300 * time.Millisecond)}}})
		start := time.Now()
		ups, _ := s.untilSync(t, 5*time.Second)
		more, _, _ := s.collect(t, 1200*time.Millisecond-time.Since(start))
		ups = append(ups, more...)
		// Initial value plus heartbeats at ~300, 600, 900 ms.
		if len(ups) < 3 || len(ups) > 6 {
			t.Errorf("heartbeat 300ms with suppress_redundant: %d updates in 1.2 s, want 3..6", len(ups))
		}
	})

	t.Run("on-change-heartbeat", func(t *testing.T) {
		c := setup(t)
		s := subscribe(t, c, &gpb.SubscriptionList{Mode: gpb.SubscriptionList_STREAM, Encoding: gpb.Encoding_PROTO,
			Subscription: []*gpb.Subscription{{Path: path(t, hqLoc), Mode: gpb.SubscriptionMode_ON_CHANGE, HeartbeatInterval: uint64(200 * time.Millisecond)}}})
		start := time.Now()
		ups, _ := s.untilSync(t, 5*time.Second)
		more, _, _ := s.collect(t, 1100*time.Millisecond-time.Since(start))
		ups = append(ups, more...)
		if len(ups) < 4 {
			t.Errorf("ON_CHANGE heartbeat 200ms: %d updates in 1.1 s, want at least 4", len(ups))
		}
	})

	t.Run("invalid", func(t *testing.T) {
		c := setup(t)
		for _, tc := range []struct {
			name    string
			sub     *gpb.Subscription
			mention string
		}{
			{"sample 1ms", sub(t, hqLoc, gpb.SubscriptionMode_SAMPLE, time.Millisecond), "sample_interval"},
			{"target-defined with interval", sub(t, hqLoc, gpb.SubscriptionMode_TARGET_DEFINED, time.Second), "TARGET_DEFINED"},
			{"heartbeat 1ms", &gpb.Subscription{Path: path(t, hqLoc), Mode: gpb.SubscriptionMode_ON_CHANGE, HeartbeatInterval: uint64(time.Millisecond)}, "heartbeat"},
			{"unknown path", sub(t, "/sites/nope", gpb.SubscriptionMode_ON_CHANGE, 0), "nope"},
		} {
			s := subscribe(t, c, &gpb.SubscriptionList{Mode: gpb.SubscriptionList_STREAM, Encoding: gpb.Encoding_PROTO, Subscription: []*gpb.Subscription{tc.sub}})
			r, err, ok := s.next(5 * time.Second)
			if !ok {
				t.Errorf("%s: no answer", tc.name)
				continue
			}
			if r != nil {
				t.Errorf("%s: got %v, want InvalidArgument", tc.name, r)
				continue
			}
			wantCode(t, err, codes.InvalidArgument, tc.mention)
		}
	})

	t.Run("no-data-yet", func(t *testing.T) {
		c := setup(t)
		const newDesc = "/sites/site[name=branch-3]/config/description"
		s := subscribe(t, c, &gpb.SubscriptionList{Mode: gpb.SubscriptionList_STREAM, Encoding: gpb.Encoding_JSON_IETF,
			Subscription: []*gpb.Subscription{sub(t, newDesc, gpb.SubscriptionMode_ON_CHANGE, 0)}})
		if ups, _ := s.untilSync(t, 5*time.Second); len(ups) != 0 {
			t.Errorf("updates for a path with no data: %v", ups)
		}
		if ups, dels, _ := s.collect(t, 300*time.Millisecond); len(ups)+len(dels) != 0 {
			t.Errorf("unexpected %v %v", ups, dels)
		}
		if err := setLeaf(ctxT(t, 5*time.Second), c, path(t, newDesc), strVal("new branch")); err != nil {
			t.Fatal(err)
		}
		ups, _, _ := s.collect(t, 700*time.Millisecond)
		if len(ups) != 1 || ups[0].path != newDesc || string(ups[0].val.GetJsonIetfVal()) != `"new branch"` {
			t.Errorf("after creating the data: %v, want %s = \"new branch\"", ups, newDesc)
		}
	})

	t.Run("target", func(t *testing.T) {
		c := setup(t)
		s := subscribe(t, c, &gpb.SubscriptionList{Mode: gpb.SubscriptionList_ONCE, Encoding: gpb.Encoding_PROTO,
			Prefix:       &gpb.Path{Target: "it-target"},
			Subscription: []*gpb.Subscription{{Path: path(t, hqLoc)}}})
		r, err, ok := s.next(5 * time.Second)
		if !ok || err != nil {
			t.Fatalf("%v (timed out %v)", err, !ok)
		}
		if r.GetUpdate().GetPrefix().GetTarget() != "it-target" {
			t.Errorf("notification %v does not echo target it-target", r)
		}
	})
}

// ---------------------------------------------------------------------------
// 4. Durability across restarts.

func siteDescPath(t testing.TB, site string) *gpb.Path {
	return path(t, "/sites/site[name="+site+"]/config/description")
}

// descriptions reads every site description.
func descriptions(t testing.TB, c gpb.GNMIClient) map[string]string {
	t.Helper()
	resp := get(t, c, &gpb.GetRequest{Path: []*gpb.Path{path(t, "/sites/site[name=*]/config/description")}, Encoding: gpb.Encoding_PROTO})
	out := map[string]string{}
	for _, n := range resp.GetNotification() {
		for _, u := range n.GetUpdate() {
			p := &gpb.Path{Elem: append(append([]*gpb.PathElem{}, n.GetPrefix().GetElem()...), u.GetPath().GetElem()...)}
			out[p.GetElem()[1].GetKey()["name"]] = u.GetVal().GetStringVal()
		}
	}
	return out
}

func TestRestartDurability(t *testing.T) {
	t.Parallel()

	t.Run("sigkill-after-acks", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		d := start(t, dir)
		loadScenario(t, d.Client)
		acked := map[string]string{}
		ctx := ctxT(t, 30*time.Second)
		for i := 0; i < 200; i++ {
			site, val := fmt.Sprintf("s-%03d", i), fmt.Sprintf("desc %d", i)
			if err := setLeaf(ctx, d.Client, siteDescPath(t, site), strVal(val)); err != nil {
				t.Fatalf("Set %d: %v", i, err)
			}
			acked[site] = val
		}
		// One more Set to an existing leaf, overwritten many times.
		for i := 0; i < 20; i++ {
			if err := setLeaf(ctx, d.Client, siteDescPath(t, "hq"), strVal(fmt.Sprintf("hq %d", i))); err != nil {
				t.Fatal(err)
			}
			acked["hq"] = fmt.Sprintf("hq %d", i)
		}
		d.kill()
		if d.state.Success() {
			t.Fatalf("SIGKILLed process reports success: %v", d.state)
		}
		d2 := start(t, dir)
		got := descriptions(t, d2.Client)
		for site, val := range acked {
			if got[site] != val {
				t.Errorf("after SIGKILL and restart, %s description = %q, want %q", site, got[site], val)
			}
		}
		if len(got) != len(acked) {
			t.Errorf("%d descriptions after restart, want %d", len(got), len(acked))
		}
		// Scenario 1 survived too.
		resp := get(t, d2.Client, &gpb.GetRequest{Path: []*gpb.Path{path(t, "/paths/path[name=*]/config/name")}, Encoding: gpb.Encoding_PROTO})
		if n := len(updates(resp)); n != 8 {
			t.Errorf("%d paths after restart, want 8", n)
		}
		// And the restarted node accepts Sets.
		if err := setLeaf(ctx, d2.Client, siteDescPath(t, "hq"), strVal("after restart")); err != nil {
			t.Errorf("Set after restart: %v", err)
		}
	})

	t.Run("sigterm", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		d := start(t, dir)
		loadScenario(t, d.Client)
		if err := setLeaf(ctxT(t, 5*time.Second), d.Client, siteDescPath(t, "branch-1"), strVal("before SIGTERM")); err != nil {
			t.Fatal(err)
		}
		// A stream open at shutdown is closed, not left hanging.
		s := subscribe(t, d.Client, &gpb.SubscriptionList{Mode: gpb.SubscriptionList_STREAM, Encoding: gpb.Encoding_PROTO,
			Subscription: []*gpb.Subscription{sub(t, "/sites", gpb.SubscriptionMode_ON_CHANGE, 0)}})
		s.untilSync(t, 5*time.Second)
		// So is a gRPC health Watch.
		watch := watchHealth(t, d.Addr)
		if st := nextHealth(t, watch, 5*time.Second); st != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health Watch before SIGTERM: %v, want SERVING", st)
		}
		// Graceful shutdown closes subscriber streams promptly rather than
		// waiting for them to end by themselves.
		sent := time.Now()
		if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		var streamErr error
		for streamErr == nil {
			_, err, ok := s.next(10 * time.Second)
			if !ok {
				t.Fatal("subscription stream still open 10 s after SIGTERM")
			}
			streamErr = err
		}
		if took := time.Since(sent); took > 2*time.Second {
			t.Errorf("the subscription stream was closed %v after SIGTERM (%v), want promptly (< 2s)", took.Round(time.Millisecond), streamErr)
		}
		for ended := false; !ended; {
			select {
			case st, ok := <-watch:
				if ended = !ok; ok && st != healthpb.HealthCheckResponse_NOT_SERVING {
					t.Errorf("health Watch during shutdown: %v, want NOT_SERVING or the end", st)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("health Watch still open 10 s after SIGTERM")
			}
		}
		code, ok := d.wait(10 * time.Second)
		if !ok {
			t.Fatal("patronusd did not exit within 10s of SIGTERM")
		}
		if took := time.Since(sent); took > 3*time.Second {
			t.Errorf("SIGTERM with one open subscription took %v to exit, want < 3s", took.Round(time.Millisecond))
		}
		if code != 0 {
			t.Errorf("exit code after SIGTERM = %d, want 0", code)
		}
		if !strings.Contains(d.stderr.String(), "stopped") {
			t.Errorf("no \"stopped\" log line after SIGTERM")
		}
		d2 := start(t, dir)
		if got := descriptions(t, d2.Client)["branch-1"]; got != "before SIGTERM" {
			t.Errorf("after SIGTERM and restart, branch-1 description = %q", got)
		}
		code2, err := d2.stop(syscall.SIGINT, 10*time.Second)
		if err != nil || code2 != 0 {
			t.Errorf("SIGINT: exit code %d, %v; want 0", code2, err)
		}
	})

	t.Run("sigkill-under-load", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		d := start(t, dir)
		const clients = 64
		var mu sync.Mutex
		acked := map[string]string{}
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for w := 0; w < clients; w++ {
			conn, err := grpc.NewClient(d.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(adminCreds))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			c := gpb.NewGNMIClient(conn)
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					site, val := fmt.Sprintf("c%02d-%d", w, i), fmt.Sprintf("w%d i%d", w, i)
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					err := setLeaf(ctx, c, siteDescPath(t, site), strVal(val))
					cancel()
					if err != nil {
						return
					}
					mu.Lock()
					acked[site] = val
					mu.Unlock()
				}
			}(w)
		}
		// Kill once a good number of Sets went through.
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			n := len(acked)
			mu.Unlock()
			if n >= 500 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		d.kill()
		close(stop)
		wg.Wait()
		// Every Set answered OK was answered by the process before it died.
		mu.Lock()
		final := acked
		mu.Unlock()
		if len(final) < 100 {
			t.Fatalf("only %d Sets were acknowledged before the kill", len(final))
		}
		d2 := start(t, dir)
		got := descriptions(t, d2.Client)
		missing := 0
		for site, val := range final {
			if got[site] != val {
				missing++
				if missing <= 5 {
					t.Errorf("acknowledged Set of %s = %q is %q after restart", site, val, got[site])
				}
			}
		}
		if missing > 0 {
			t.Errorf("%d of %d acknowledged Sets lost", missing, len(final))
		}
		t.Logf("%d acknowledged Sets before SIGKILL, %d sites after restart", len(final), len(got))
	})
}

// ---------------------------------------------------------------------------
// 5. Flags and exit codes.

func TestFlagsAndExitCodes(t *testing.T) {
	t.Parallel()

	nonEmptyLines := func(s string) []string {
		var out []string
		sc := bufio.NewScanner(strings.NewReader(s))
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) != "" {
				out = append(out, sc.Text())
			}
		}
		return out
	}

	t.Run("join-ca-sha256", func(t *testing.T) {
		t.Parallel()
		for i, args := range [][]string{
			{"--join-ca-sha256", strings.Repeat("ab", 32)},                                        // without --join
			{"--join", "127.0.0.1:1", "--join-ca-sha256", "not-hex"},                              // not a fingerprint
			{"--join", "127.0.0.1:1", "--join-ca-sha256", strings.Repeat("ab", 32), "--insecure"}, // no CA without TLS
		} {
			d := launch(t, fmt.Sprint("join-ca-", i), append(args, "--data-dir", t.TempDir()), nil)
			code, ok := d.wait(10 * time.Second)
			if !ok || code == 0 || !strings.Contains(d.stderr.String(), "--join-ca-sha256") {
				t.Errorf("patronusd %v: exited %v with code %d, stderr:\n%s\nwant a non-zero exit naming --join-ca-sha256", args, ok, code, d.stderr.String())
			}
		}
	})

	t.Run("bad-flag", func(t *testing.T) {
		t.Parallel()
		d := launch(t, "bad-flag", []string{"--no-such-flag", "--data-dir", t.TempDir()}, nil)
		code, ok := d.wait(10 * time.Second)
		if !ok {
			t.Fatal("patronusd with a bad flag did not exit")
		}
		if code == 0 {
			t.Errorf("exit code 0 for a bad flag")
		}
		lines := nonEmptyLines(d.stderr.String())
		if len(lines) != 1 {
			t.Errorf("stderr has %d lines for a bad flag, want one:\n%s", len(lines), d.stderr.String())
		}
		if !strings.Contains(d.stderr.String(), "no-such-flag") {
			t.Errorf("stderr does not name the flag:\n%s", d.stderr.String())
		}
	})

	t.Run("bad-flag-value", func(t *testing.T) {
		t.Parallel()
		d := launch(t, "bad-value", []string{"--insecure", "--listen", freeAddr(t), "--http", freeAddr(t), "--data-dir", t.TempDir(), "--log-level", "chatty"}, nil)
		code, ok := d.wait(10 * time.Second)
		if !ok || code == 0 {
			t.Fatalf("bad --log-level: exited %v code %d, want non-zero", ok, code)
		}
		if lines := nonEmptyLines(d.stderr.String()); len(lines) != 1 || !strings.Contains(lines[0], "log-level") {
			t.Errorf("stderr for a bad --log-level, want one line naming it:\n%s", d.stderr.String())
		}
	})

	t.Run("port-in-use", func(t *testing.T) {
		t.Parallel()
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		busy := l.Addr().String()
		for _, tc := range []struct{ flag string }{{"--listen"}, {"--http"}} {
			args := []string{"--insecure", "--listen", freeAddr(t), "--http", freeAddr(t), "--data-dir", t.TempDir()}
			for i := range args {
				if args[i] == tc.flag {
					args[i+1] = busy
				}
			}
			d := launch(t, "port-in-use"+tc.flag, args, nil)
			code, ok := d.wait(10 * time.Second)
			if !ok {
				t.Fatalf("%s on a port in use: did not exit", tc.flag)
			}
			if code == 0 {
				t.Errorf("%s on a port in use: exit code 0", tc.flag)
			}
			lines := nonEmptyLines(d.stderr.String())
			if len(lines) != 1 || !strings.Contains(lines[0], busy) || !strings.Contains(lines[0], tc.flag) {
				t.Errorf("%s on a port in use: stderr should be one line naming %s:\n%s", tc.flag, busy, d.stderr.String())
			}
		}
	})

	t.Run("unusable-data-dir", func(t *testing.T) {
		t.Parallel()
		file := filepath.Join(t.TempDir(), "a-file")
		if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		d := launch(t, "bad-dir", []string{"--insecure", "--listen", freeAddr(t), "--http", freeAddr(t), "--data-dir", file}, nil)
		code, ok := d.wait(10 * time.Second)
		if !ok || code == 0 {
			t.Fatalf("unusable data dir: exited %v code %d, want non-zero", ok, code)
		}
		if !strings.Contains(d.stderr.String(), file) {
			t.Errorf("stderr does not name the data dir:\n%s", d.stderr.String())
		}
	})

	t.Run("env", func(t *testing.T) {
		t.Parallel()
		addr, haddr := freeAddr(t), freeAddr(t)
		dir := t.TempDir()
		d := launch(t, "env", []string{"--http", haddr}, []string{
			"PATRONUS_LISTEN=" + addr, "PATRONUS_INSECURE=true", "PATRONUS_DATA_DIR=" + dir, "PATRONUS_NODE_NAME=env-node",
		})
		if err := d.ready(addr, insecure.NewCredentials()); err != nil {
			t.Fatalf("PATRONUS_LISTEN=%s not honoured: %v", addr, err)
		}
		resp := get(t, d.Client, &gpb.GetRequest{Path: []*gpb.Path{path(t, "/system/state/node-name")}, Encoding: gpb.Encoding_PROTO})
		if v := updates(resp)["/system/state/node-name"]; v.GetStringVal() != "env-node" {
			t.Errorf("PATRONUS_NODE_NAME not honoured: node-name %v", v)
		}
		if _, err := os.Stat(filepath.Join(dir, "tls")); err == nil {
			t.Errorf("PATRONUS_INSECURE=true still generated TLS material")
		}
		entries, err := os.ReadDir(dir)
		if err != nil || len(entries) == 0 {
			t.Errorf("PATRONUS_DATA_DIR=%s holds nothing (%v)", dir, err)
		}
		// A flag on the command line wins over the environment.
		addr2 := freeAddr(t)
		d2 := launch(t, "env-flag", []string{"--listen", addr2, "--http", freeAddr(t)}, []string{
			"PATRONUS_LISTEN=" + addr, "PATRONUS_INSECURE=true", "PATRONUS_DATA_DIR=" + t.TempDir(),
		})
		if err := d2.ready(addr2, insecure.NewCredentials()); err != nil {
			t.Errorf("--listen did not win over PATRONUS_LISTEN: %v", err)
		}
		// A bad environment value is a bad flag.
		d3 := launch(t, "env-bad", []string{"--data-dir", t.TempDir()}, []string{"PATRONUS_INSECURE=maybe"})
		if code, ok := d3.wait(10 * time.Second); !ok || code == 0 {
			t.Errorf("PATRONUS_INSECURE=maybe: exited %v code %d, want non-zero", ok, code)
		} else if !strings.Contains(d3.stderr.String(), "PATRONUS_INSECURE") {
			t.Errorf("stderr does not name PATRONUS_INSECURE:\n%s", d3.stderr.String())
		}
	})

	t.Run("tls", func(t *testing.T) {
		t.Parallel()
		addr, dir := freeAddr(t), t.TempDir()
		d := launch(t, "tls", []string{"--listen", addr, "--http", freeAddr(t), "--data-dir", dir, "--node-name", "it-node"}, nil)
		tlsCreds := credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})
		if err := d.ready(addr, tlsCreds); err != nil {
			t.Fatalf("TLS client: %v", err)
		}
		// A plaintext client fails.
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := gpb.NewGNMIClient(conn).Capabilities(ctxT(t, 2*time.Second), &gpb.CapabilityRequest{}); err == nil {
			t.Error("a plaintext client got Capabilities from a TLS server")
		}
		// The generated certificate is in the data dir and is the one served.
		pemBytes, err := os.ReadFile(filepath.Join(dir, "tls", "server.crt"))
		if err != nil {
			t.Fatalf("no generated certificate: %v", err)
		}
		block, _ := pem.Decode(pemBytes)
		if block == nil {
			t.Fatalf("server.crt is not PEM")
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(dir, "tls", "server.key")); err != nil {
			t.Errorf("no server.key: %v", err)
		}
		tc, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatal(err)
		}
		served := tc.ConnectionState().PeerCertificates[0]
		tc.Close()
		if !served.Equal(cert) {
			t.Error("the served certificate is not <data-dir>/tls/server.crt")
		}
		sum := sha256.Sum256(cert.Raw)
		if !strings.Contains(d.stderr.String(), fmt.Sprintf("%x", sum[:])) {
			t.Error("the certificate's SHA-256 fingerprint is not logged")
		}
		// Verified against the generated certificate as a CA, 127.0.0.1 is valid.
		pool := x509.NewCertPool()
		pool.AddCert(cert)
		conn2, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})), grpc.WithPerRPCCredentials(adminCreds))
		if err != nil {
			t.Fatal(err)
		}
		defer conn2.Close()
		if _, err := gpb.NewGNMIClient(conn2).Capabilities(ctxT(t, 5*time.Second), &gpb.CapabilityRequest{}); err != nil {
			t.Errorf("verifying TLS client: %v", err)
		}
		// A restart reuses the certificate.
		if code, err := d.stop(syscall.SIGTERM, 10*time.Second); err != nil || code != 0 {
			t.Fatalf("SIGTERM: %d %v", code, err)
		}
		addr2 := freeAddr(t)
		d2 := launch(t, "tls-restart", []string{"--listen", addr2, "--http", freeAddr(t), "--data-dir", dir}, nil)
		if err := d2.ready(addr2, tlsCreds); err != nil {
			t.Fatal(err)
		}
		again, _ := os.ReadFile(filepath.Join(dir, "tls", "server.crt"))
		if !bytes.Equal(again, pemBytes) {
			t.Error("a restart regenerated the certificate")
		}
	})
}
