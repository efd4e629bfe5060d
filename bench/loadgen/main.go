// The bench's load generator (bench/harness.ts starts it; ADR 0005 says why it is Go).
//
// It reads one JSON load request per line on stdin and writes one JSON result per line
// on stdout, like the autocannon process it replaced: `connections` keep-alive HTTP/1.1
// connections over mutual TLS, each sending its next GET as soon as the last answer is
// read, for `seconds`. Every answer's latency is kept (nanosecond clock), so sub-millisecond
// percentiles are exact. It runs on one OS thread (GOMAXPROCS=1): the bench pins it to a
// core of its own, and it spends a fraction of autocannon's CPU per request, so a fast
// server is measured rather than this process.
package main

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// request is one load, as bench/loadgen.ts's LoadRequest.
type request struct {
	URL         string                     `json:"url"`
	Connections int                        `json:"connections"`
	Seconds     float64                    `json:"seconds"`
	TLS         struct{ Cert, Key string } `json:"tls"`
	Headers     map[string]string          `json:"headers"`
}

// result is what one load measured, as bench/loadgen.ts's LoadResult (latencies in ms).
type result struct {
	RPS float64 `json:"rps"`
	// Percentiles are null when nothing was answered (JSON has no NaN).
	P50      *float64 `json:"p50"`
	P90      *float64 `json:"p90"`
	P99      *float64 `json:"p99"`
	Answers  int      `json:"answers"`
	Non2xx   int      `json:"non2xx"`
	Errors   int      `json:"errors"`
	Timeouts int      `json:"timeouts"`
}

// timeout bounds one answer, as autocannon's default did.
const timeout = 10 * time.Second

// worker is one connection's tally; each goroutine owns one, so nothing is shared while loading.
type worker struct {
	latencies                []time.Duration
	non2xx, errors, timeouts int
}

func main() {
	runtime.GOMAXPROCS(1)
	if len(os.Args) == 2 && os.Args[1] == "probe" {
		probe()
		return
	}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		line := strings.TrimSpace(in.Text())
		if line == "" {
			continue
		}
		var r request
		var answer any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			answer = map[string]string{"error": "bad load request: " + err.Error()}
		} else if res, err := load(r); err != nil {
			answer = map[string]string{"error": err.Error()}
		} else {
			answer = res
		}
		if err := out.Encode(answer); err != nil {
			os.Exit(1)
		}
	}
}

func load(r request) (*result, error) {
	u, err := url.Parse(r.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("the url must be https://host:port/path, not %q", r.URL)
	}
	if r.Connections < 1 || r.Connections > 10_000 || r.Seconds <= 0 || r.Seconds > 3600 {
		return nil, fmt.Errorf("connections must be 1-10000 and seconds 0-3600, not %d and %g", r.Connections, r.Seconds)
	}
	cert, err := tls.X509KeyPair([]byte(r.TLS.Cert), []byte(r.TLS.Key))
	if err != nil {
		return nil, fmt.Errorf("client certificate: %w", err)
	}
	// The bench's servers use certificates of its own CAs: measured, not trusted.
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "443")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\n", u.RequestURI(), u.Host)
	for k, v := range r.Headers {
		if strings.ContainsAny(k+v, "\r\n") {
			return nil, fmt.Errorf("header %q has a line break", k)
		}
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	b.WriteString("\r\n")
	wire := []byte(b.String())

	start := time.Now()
	deadline := start.Add(time.Duration(r.Seconds * float64(time.Second)))
	workers := make([]worker, r.Connections)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func(w *worker) {
			defer wg.Done()
			w.run(addr, cfg, wire, deadline)
		}(&workers[i])
	}
	wg.Wait()

	res := &result{}
	var all []time.Duration
	for _, w := range workers {
		all = append(all, w.latencies...)
		res.Non2xx += w.non2xx
		res.Errors += w.errors
		res.Timeouts += w.timeouts
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	res.Answers = len(all)
	res.RPS = float64(len(all)) / r.Seconds
	res.P50, res.P90, res.P99 = percentile(all, 50), percentile(all, 90), percentile(all, 99)
	return res, nil
}

// run sends requests on one connection until the deadline, dialing again after a
// connection error or a server that closes it. Only answers read before the deadline count.
func (w *worker) run(addr string, cfg *tls.Config, wire []byte, deadline time.Time) {
	var conn net.Conn
	var br *bufio.Reader
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for time.Now().Before(deadline) {
		if conn == nil {
			d := &net.Dialer{Timeout: timeout}
			c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
			if err != nil {
				w.fail(err)
				time.Sleep(10 * time.Millisecond) // a refused dial must not spin
				continue
			}
			conn, br = c, bufio.NewReaderSize(c, 64<<10)
		}
		t0 := time.Now()
		conn.SetDeadline(t0.Add(timeout))
		status, keep, err := exchange(conn, br, wire)
		took := time.Since(t0)
		if err != nil {
			w.fail(err)
			conn.Close()
			conn = nil
			continue
		}
		if t0.Add(took).Before(deadline) {
			if status >= 200 && status < 300 {
				w.latencies = append(w.latencies, took)
			} else {
				w.non2xx++
			}
		}
		if !keep {
			conn.Close()
			conn = nil
		}
	}
}

// exchange writes one request and reads its whole answer; keep says the connection stays open.
func exchange(conn net.Conn, br *bufio.Reader, wire []byte) (status int, keep bool, err error) {
	if _, err := conn.Write(wire); err != nil {
		return 0, false, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, false, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, false, err
	}
	return resp.StatusCode, !resp.Close, nil
}

func (w *worker) fail(err error) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		w.timeouts++
	} else {
		w.errors++
	}
}

// probeMemory is the probe's working set: 2 MiB, beyond a core's own caches, as a Node
// server's heap is, so a neighbour taking the shared cache slows the probe too.
var probeMemory = make([]uint32, 1<<19)

// probe answers each line on stdin with this core's speed now: how many steps of a fixed
// mix of arithmetic and scattered memory updates it runs per microsecond of its own CPU
// time, the median of three 10 ms samples. `loadgen probe`, pinned to one core, is how the
// bench notices a core the hypervisor is running at a fraction of its speed (ADR 0005).
// CPU time, not wall time: other processes sharing the core take turns with the probe and
// leave its rate alone, while time the hypervisor takes the core away without telling
// the guest is charged to the probe and lowers it.
func probe() {
	runtime.LockOSThread()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var samples [3]float64
		for i := range samples {
			samples[i] = steps(10 * time.Millisecond)
		}
		sort.Float64s(samples[:])
		fmt.Printf("%.1f\n", samples[1])
	}
}

func steps(d time.Duration) float64 {
	x, n := uint32(12345), 0
	start := threadCPU()
	for threadCPU()-start < d {
		for i := 0; i < 1<<16; i++ {
			x = x*1664525 + 1013904223
			probeMemory[(x>>13)&(1<<19-1)] += x
		}
		n += 1 << 16
	}
	return float64(n) / float64((threadCPU() - start).Microseconds())
}

// threadCPU is the CPU time the calling OS thread has used (CLOCK_THREAD_CPUTIME_ID).
func threadCPU() time.Duration {
	const clockThreadCPUTimeID = 3
	var ts syscall.Timespec
	if _, _, errno := syscall.RawSyscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPUTimeID, uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		panic(errno)
	}
	return time.Duration(ts.Nano())
}

// percentile is bench/stats.ts's (nearest rank), in milliseconds; nil for no answers.
func percentile(sorted []time.Duration, p float64) *float64 {
	if len(sorted) == 0 {
		return nil
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	i = max(0, min(len(sorted)-1, i))
	ms := float64(sorted[i]) / float64(time.Millisecond)
	return &ms
}
