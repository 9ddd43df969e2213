// Command statsexport exports a patronusd node's stats history (path
// quality and health, per-policy and per-path counters) for a time range as
// CSV or JSON. It is an ordinary gNMI client: it subscribes with the History
// extension (a STREAM over the range) and writes one row for each value a
// leaf took: the state at the start of the range, then every change.
//
//	go run ./tools/statsexport -addr 127.0.0.1:9339 -from -1h -format csv > stats.csv
//	go run ./tools/statsexport -addr 127.0.0.1:9339 -from 2026-11-27T06:00:00Z -to 2026-11-27T07:00:00Z \
//	    -path /policies/policy/state/counters -format json -out stats.json
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"github.com/openconfig/gnmi/proto/gnmi_ext"
	"github.com/openconfig/ygot/ygot"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// Row is one leaf's value in one sample.
type Row struct {
	Time  time.Time `json:"time"`
	Path  string    `json:"path"`
	Value any       `json:"value"`
}

// Options select what is exported.
type Options struct {
	From, To time.Time
	Paths    []string
}

// Export streams the history of opts.Paths over [From, To) from c and calls
// emit for every leaf value, in time order.
func Export(ctx context.Context, c gpb.GNMIClient, opts Options, emit func(Row) error) error {
	list := &gpb.SubscriptionList{Mode: gpb.SubscriptionList_STREAM, Encoding: gpb.Encoding_PROTO}
	for _, p := range opts.Paths {
		path, err := ygot.StringToStructuredPath(p)
		if err != nil {
			return fmt.Errorf("bad path %q: %w", p, err)
		}
		list.Subscription = append(list.Subscription, &gpb.Subscription{Path: path})
	}
	st, err := c.Subscribe(ctx)
	if err != nil {
		return err
	}
	err = st.Send(&gpb.SubscribeRequest{
		Request: &gpb.SubscribeRequest_Subscribe{Subscribe: list},
		Extension: []*gnmi_ext.Extension{{Ext: &gnmi_ext.Extension_History{History: &gnmi_ext.History{
			Request: &gnmi_ext.History_Range{Range: &gnmi_ext.TimeRange{Start: opts.From.UnixNano(), End: opts.To.UnixNano()}},
		}}}},
	})
	if err != nil {
		return err
	}
	for {
		r, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		n := r.GetUpdate()
		if n == nil {
			continue
		}
		t := time.Unix(0, n.GetTimestamp()).UTC()
		for _, u := range n.GetUpdate() {
			p := &gpb.Path{Elem: append(append([]*gpb.PathElem{}, n.GetPrefix().GetElem()...), u.GetPath().GetElem()...)}
			s, err := ygot.PathToString(p)
			if err != nil {
				return err
			}
			if err := emit(Row{Time: t, Path: s, Value: value(u.GetVal())}); err != nil {
				return err
			}
		}
	}
}

func value(tv *gpb.TypedValue) any {
	switch v := tv.GetValue().(type) {
	case *gpb.TypedValue_UintVal:
		return v.UintVal
	case *gpb.TypedValue_IntVal:
		return v.IntVal
	case *gpb.TypedValue_BoolVal:
		return v.BoolVal
	case *gpb.TypedValue_StringVal:
		return v.StringVal
	case *gpb.TypedValue_DoubleVal:
		return v.DoubleVal
	case *gpb.TypedValue_DecimalVal:
		f := float64(v.DecimalVal.GetDigits())
		for range v.DecimalVal.GetPrecision() {
			f /= 10
		}
		return f
	}
	return tv.String()
}

func formatValue(v any) string {
	switch x := v.(type) {
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case string:
		return x
	}
	return fmt.Sprint(v)
}

// parseTime reads RFC 3339, or a duration relative to now ("-1h"), or "now".
func parseTime(s string, now time.Time) (time.Time, error) {
	if s == "now" || s == "" {
		return now, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(d), nil
	}
	return time.Parse(time.RFC3339Nano, s)
}

type pathList []string

func (p *pathList) String() string     { return strings.Join(*p, ",") }
func (p *pathList) Set(s string) error { *p = append(*p, s); return nil }

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// run is the command: it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("statsexport", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		addr    = fs.String("addr", "127.0.0.1:9339", "gNMI address of the node whose history to export")
		plain   = fs.Bool("insecure", false, "plaintext gRPC (a node started with --insecure)")
		caFile  = fs.String("tls-ca", "", "CA certificate that the node's certificate chains to")
		skip    = fs.Bool("tls-skip-verify", false, "accept any server certificate (the node's generated self-signed one)")
		from    = fs.String("from", "-1h", "start of the range: RFC 3339 time or a duration relative to now")
		to      = fs.String("to", "now", "end of the range (exclusive): RFC 3339 time, a relative duration or now")
		format  = fs.String("format", "csv", "csv or json")
		out     = fs.String("out", "", "output file (default standard output)")
		timeout = fs.Duration("timeout", time.Minute, "give up after this long")
		paths   pathList
	)
	fs.Var(&paths, "path", "a path to export (repeatable; default /paths and /policies)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "statsexport: "+format+"\n", a...)
		return code
	}
	now := time.Now()
	f, err := parseTime(*from, now)
	if err != nil {
		return fail(2, "-from: %v", err)
	}
	t, err := parseTime(*to, now)
	if err != nil {
		return fail(2, "-to: %v", err)
	}
	if *format != "csv" && *format != "json" {
		return fail(2, "-format must be csv or json")
	}
	if len(paths) == 0 {
		paths = pathList{"/paths", "/policies"}
	}
	creds := insecure.NewCredentials()
	if !*plain {
		cfg := &tls.Config{InsecureSkipVerify: *skip}
		if *caFile != "" {
			pem, err := os.ReadFile(*caFile)
			if err != nil {
				return fail(2, "%v", err)
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return fail(2, "%s holds no PEM certificate", *caFile)
			}
		}
		creds = credentials.NewTLS(cfg)
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fail(2, "%v", err)
	}
	defer conn.Close()
	w := stdout
	if *out != "" {
		file, err := os.Create(*out)
		if err != nil {
			return fail(2, "%v", err)
		}
		defer file.Close()
		w = file
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	opts := Options{From: f, To: t, Paths: paths}
	if *format == "csv" {
		cw := csv.NewWriter(w)
		cw.Write([]string{"time", "path", "value"})
		err = Export(ctx, gpb.NewGNMIClient(conn), opts, func(r Row) error {
			return cw.Write([]string{r.Time.Format(time.RFC3339Nano), r.Path, formatValue(r.Value)})
		})
		cw.Flush()
		err = errors.Join(err, cw.Error())
	} else {
		rows := []Row{}
		err = Export(ctx, gpb.NewGNMIClient(conn), opts, func(r Row) error { rows = append(rows, r); return nil })
		if err == nil {
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			err = enc.Encode(map[string]any{"from": f.UTC(), "to": t.UTC(), "rows": rows})
		}
	}
	if err != nil {
		return fail(1, "%v", err)
	}
	return 0
}
