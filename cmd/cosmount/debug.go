package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"runtime/debug"
	runtimepprof "runtime/pprof"
	"time"

	"k8s.io/klog/v2"
)

// Profiling of the running server, for performance work (see test/bench
// --profile). Off unless one of these environment variables is set; they are
// deliberately not flags, so that nobody turns them on by accident in a
// PersistentVolume's mount options:
//
//	COSMOUNT_DEBUG_PPROF=127.0.0.1:6060   net/http/pprof on a loopback address
//	COSMOUNT_DEBUG_CPU_PROFILE=FILE       a CPU profile of the whole serving life
//	COSMOUNT_DEBUG_ALLOC_PROFILE=FILE     an allocation profile written on exit
const (
	envPprofAddress = "COSMOUNT_DEBUG_PPROF"
	envCPUProfile   = "COSMOUNT_DEBUG_CPU_PROFILE"
	envAllocProfile = "COSMOUNT_DEBUG_ALLOC_PROFILE"
)

// startProfiling starts what the environment asks for and returns the
// function that stops it (writing the profiles); it never returns nil.
func startProfiling() (stop func(), err error) {
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	if addr := os.Getenv(envPprofAddress); addr != "" {
		s, err := servePprof(addr)
		if err != nil {
			stop()
			return func() {}, err
		}
		stops = append(stops, s)
	}
	if path := os.Getenv(envCPUProfile); path != "" {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			stop()
			return func() {}, fmt.Errorf("%s: %w", envCPUProfile, err)
		}
		if err := runtimepprof.StartCPUProfile(f); err != nil {
			f.Close()
			stop()
			return func() {}, fmt.Errorf("%s: %w", envCPUProfile, err)
		}
		stops = append(stops, func() {
			runtimepprof.StopCPUProfile()
			if err := f.Close(); err != nil {
				klog.ErrorS(err, "writing the CPU profile", "path", path)
			}
		})
	}
	if path := os.Getenv(envAllocProfile); path != "" {
		stops = append(stops, func() {
			if err := writeAllocProfile(path); err != nil {
				klog.ErrorS(err, "writing the allocation profile", "path", path)
			}
		})
	}
	return stop, nil
}

func writeAllocProfile(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	runtime.GC() // the profile shows allocations up to the last GC
	if err := runtimepprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// servePprof serves net/http/pprof on a loopback address only: profiles and
// goroutine dumps show keys and paths, which must not leave the node.
func servePprof(addr string) (func(), error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("%s=%q: %w", envPprofAddress, addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("%s=%q: only a loopback address (127.0.0.1:PORT) is allowed", envPprofAddress, addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", envPprofAddress, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "pprof listener stopped", "address", addr)
		}
	}()
	klog.InfoS("serving pprof (debugging only)", "address", l.Addr().String())
	return func() { _ = srv.Close() }, nil
}

// gcBallast raises the heap the collector aims at when few buffers are live
// (tuneGC). It is allocated once and never touched, so it takes address
// space, not memory: fresh pages the process never writes are not resident.
var gcBallast []byte

// ballastSize is the floor tuneGC gives the heap goal.
const ballastSize = 32 << 20

// tuneGC sizes the Go runtime to the mount's memory budget, unless the
// environment does (GOGC, GOMEMLIMIT). Every FUSE read leaves two 128 KiB
// buffers of bazil's behind, so a reader produces twice its throughput in
// garbage. The profiles showed two ways that costs CPU:
//
//   - With the default GOGC=100 the heap grows to twice the live buffers
//     before a collection, and every fresh page of that growth is a page
//     fault. GOGC=50 keeps it at 1.5x (the buffers hold no pointers, so the
//     extra collections are cheap).
//   - When almost nothing is live (reads served by the read cache, small
//     files) the heap goal is a few MiB: the collector runs every few
//     reads and the scavenger hands the freed pages back to the kernel
//     (madvise) only for the next reads to fault them in again; that was a
//     sixth of a cached read's CPU. A 32 MiB ballast is the floor of the
//     live heap the goal is computed from.
//
// A soft limit of memoryLimit plus a quarter (plus the read cache's memory
// tier) makes the collector work harder rather than let the process grow
// past it.
func tuneGC(memoryLimit, cacheMemory int64) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
		gcBallast = make([]byte, ballastSize)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit + memoryLimit/4 + cacheMemory)
	}
}
