// Package coordinator is the job's brain: it holds the run's plan and state
// in etcd, wins leadership by election (a second coordinator stands by), cuts
// each epoch into work units and hands them to live workers, tracks which
// records each epoch has consumed, and reacts to membership changes.
package coordinator
