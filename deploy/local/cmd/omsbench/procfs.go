package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Process accounting from Linux's /proc: CPU time (utime+stime) and peak
// resident memory (VmHWM).

// clockTicks is the kernel's USER_HZ, the unit of /proc/<pid>/stat's CPU
// times: AT_CLKTCK from the process's auxiliary vector, 100 when it cannot
// be read (what Linux uses on every common architecture).
var clockTicks = sync.OnceValue(func() int64 {
	const atClkTck = 17
	b, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return 100
	}
	for i := 0; i+16 <= len(b); i += 16 {
		k, v := binary.NativeEndian.Uint64(b[i:]), binary.NativeEndian.Uint64(b[i+8:])
		if k == atClkTck && v > 0 {
			return int64(v)
		}
	}
	return 100
})

// cpuTime is the CPU pid has used so far, user and system.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold spaces or
	// parentheses itself: fields are counted from the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration((utime + stime) * int64(time.Second) / clockTicks()), nil
}

// peakRSS is pid's peak resident set size (VmHWM) in bytes.
func peakRSS(pid int) (int64, error) {
	m, err := memory(pid)
	return m.HWM, err
}

// mem is a process's resident set in bytes: now (VmRSS) and its peak so
// far (VmHWM).
type mem struct{ RSS, HWM int64 }

func memory(pid int) (mem, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return mem{}, err
	}
	var m mem
	var seen int
	for line := range strings.Lines(string(b)) {
		for key, dst := range map[string]*int64{"VmRSS:": &m.RSS, "VmHWM:": &m.HWM} {
			if v, ok := strings.CutPrefix(line, key); ok {
				kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				if err != nil {
					return mem{}, fmt.Errorf("/proc/%d/status: %s %w", pid, key, err)
				}
				*dst = kb << 10
				seen++
			}
		}
	}
	if seen < 2 {
		return mem{}, fmt.Errorf("/proc/%d/status: no VmRSS or VmHWM", pid)
	}
	return m, nil
}

// procfsWorks says whether this system has the /proc the bench reads.
func procfsWorks() error {
	if _, err := cpuTime(os.Getpid()); err != nil {
		return fmt.Errorf("omsbench reads CPU time and memory from Linux's /proc: %w", err)
	}
	if _, err := peakRSS(os.Getpid()); err != nil {
		return fmt.Errorf("omsbench reads CPU time and memory from Linux's /proc: %w", err)
	}
	return nil
}

// machineInfo describes where the bench ran, for the report.
func machineInfo() (cpuModel, memTotal, kernel, load string) {
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				cpuModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				if kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64); err == nil {
					memTotal = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
				}
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			load = strings.Join(f[:3], " ")
		}
	}
	return cpuModel, memTotal, kernel, load
}
