package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// nsCounters are the network namespace's own counters: every packet on
// lo, headers and bare ACKs included. In a private namespace all of it
// is this run's (and on lo each packet is counted once sent, once
// received: these are the sent ones).
type nsCounters struct {
	ipOut, mcastOut       int64 // IP bytes sent, all and multicast (IpExt OutOctets, OutMcastOctets)
	mcastPktsOut, tcpSegs int64 // multicast packets (IpExt OutMcastPkts), TCP segments sent (Tcp OutSegs)
}

func (a nsCounters) sub(b nsCounters) nsCounters {
	return nsCounters{a.ipOut - b.ipOut, a.mcastOut - b.mcastOut, a.mcastPktsOut - b.mcastPktsOut, a.tcpSegs - b.tcpSegs}
}

// unicast is the IP bytes of unicast packets: here TCP, the room links.
func (a nsCounters) unicast() int64 { return a.ipOut - a.mcastOut }

// readNS reads the namespace's counters from /proc/net.
func readNS() (nsCounters, error) {
	ip, err := procNet("/proc/net/netstat", "IpExt:")
	if err != nil {
		return nsCounters{}, err
	}
	tcp, err := procNet("/proc/net/snmp", "Tcp:")
	if err != nil {
		return nsCounters{}, err
	}
	return nsCounters{ipOut: ip["OutOctets"], mcastOut: ip["OutMcastOctets"], mcastPktsOut: ip["OutMcastPkts"], tcpSegs: tcp["OutSegs"]}, nil
}

// procNet reads one section of a /proc/net/{snmp,netstat} file: a line
// of names after prefix, then a line of values after it.
func procNet(path, prefix string) (map[string]int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var names []string
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) == 0 || fs[0] != prefix {
			continue
		}
		if names == nil {
			names = fs[1:]
			continue
		}
		out := make(map[string]int64, len(names))
		for i, v := range fs[1:] {
			if i < len(names) {
				out[names[i]], _ = strconv.ParseInt(v, 10, 64)
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s: no %s section", path, prefix)
}
