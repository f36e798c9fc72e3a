package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// DefaultLeaderTTL is the session lease TTL of a leader when
// ElectionConfig.TTL is zero: a standby takes over about this long after
// the leader's process dies.
const DefaultLeaderTTL = 2 * time.Second

// ErrNoLeader is returned by Election.Leader when nobody is leader.
var ErrNoLeader = errors.New("cluster: no leader")

// ElectionConfig configures NewElection.
type ElectionConfig struct {
	// Client is the etcd client; the Election does not close it.
	Client *clientv3.Client
	// Keys is the run's key builder; candidates campaign under
	// Keys.Election().
	Keys Keys
	// Self is this candidate, published as the leader's value so that
	// others can find the leader's addresses.
	Self Member
	// TTL is the leader session's lease TTL, rounded up to whole seconds.
	// Default DefaultLeaderTTL.
	TTL time.Duration
}

// Election elects one leader among candidates (the coordinators of a run),
// on go.etcd.io/etcd/client/v3/concurrency: each candidate holds a key under
// the election prefix bound to its session lease, and the key with the
// lowest create revision is the leader's.
type Election struct {
	cli    *clientv3.Client
	prefix string
	val    string
	ttl    int
}

// Leader is who leads, and the term's fencing token.
type Leader struct {
	Member Member
	// Key is the leader's key under the election prefix.
	Key string
	// Rev is the create revision of Key. It grows with every term, so it
	// orders terms and fences writes (Term.Guard).
	Rev int64
}

// NewElection returns an election handle. It does not talk to etcd.
func NewElection(cfg ElectionConfig) (*Election, error) {
	if cfg.Client == nil {
		return nil, errors.New("cluster: election: nil etcd client")
	}
	if cfg.Keys.prefix == "" {
		return nil, errors.New("cluster: election: empty Keys (use RunKeys)")
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultLeaderTTL
	}
	val, err := json.Marshal(cfg.Self)
	if err != nil {
		return nil, fmt.Errorf("cluster: election: encode candidate: %w", err)
	}
	return &Election{
		cli:    cfg.Client,
		prefix: cfg.Keys.Election(),
		val:    string(val),
		ttl:    int(math.Ceil(cfg.TTL.Seconds())),
	}, nil
}

// Term is one tenure as leader, from Campaign until Done.
type Term struct {
	session    *concurrency.Session
	election   *concurrency.Election
	leader     Leader
	resignOnce sync.Once
}

// Campaign blocks until this candidate is leader, or ctx ends. It retries
// with a new session if its session is lost while it waits (etcd
// unreachable for a TTL). On return the candidate's key is verified to be
// still in place.
func (e *Election) Campaign(ctx context.Context) (*Term, error) {
	for b := newBackoff(); ; {
		t, err := e.campaign(ctx)
		if err == nil {
			return t, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("cluster: campaign: %w", ctx.Err())
		}
		if !b.Wait(ctx) {
			return nil, fmt.Errorf("cluster: campaign (last error: %v): %w", err, ctx.Err())
		}
	}
}

func (e *Election) campaign(ctx context.Context) (*Term, error) {
	// Grant the lease here so that ctx bounds it; the session's own
	// context must outlive the campaign.
	lr, err := e.cli.Grant(ctx, int64(e.ttl))
	if err != nil {
		return nil, fmt.Errorf("cluster: campaign: grant: %w", err)
	}
	s, err := concurrency.NewSession(e.cli, concurrency.WithLease(lr.ID), concurrency.WithTTL(e.ttl))
	if err != nil {
		return nil, fmt.Errorf("cluster: campaign: session: %w", err)
	}
	el := concurrency.NewElection(s, e.prefix)
	cctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-s.Done():
			cancel()
		case <-cctx.Done():
		}
	}()
	err = el.Campaign(cctx, e.val)
	cancel()
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("cluster: campaign: %w", err)
	}
	// concurrency.Election.Campaign also returns when the candidate's own
	// key vanished (lease expired) while it waited: check.
	resp, err := e.cli.Get(ctx, el.Key())
	if err != nil || len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != el.Rev() {
		s.Close()
		if err == nil {
			err = errors.New("candidate key lost while waiting")
		}
		return nil, fmt.Errorf("cluster: campaign: %w", err)
	}
	select {
	case <-s.Done():
		return nil, errors.New("cluster: campaign: session lost")
	default:
	}
	l := Leader{Key: el.Key(), Rev: el.Rev()}
	json.Unmarshal(resp.Kvs[0].Value, &l.Member)
	return &Term{session: s, election: el, leader: l}, nil
}

// Leader returns this term's leader record (the local candidate).
func (t *Term) Leader() Leader { return t.leader }

// Done is closed when leadership is lost (the session lease could not be
// kept alive for a TTL) or resigned. The etcd client notices a lost lease
// up to about a second after etcd expires it, so a leader must not rely on
// Done alone for writes that two leaders must not both make: put Guard in
// their Txn.
func (t *Term) Done() <-chan struct{} { return t.session.Done() }

// IsLeader reports whether the term is still on (Done not closed).
func (t *Term) IsLeader() bool {
	select {
	case <-t.session.Done():
		return false
	default:
		return true
	}
}

// Guard is a Txn compare that holds only while this term's leader key
// exists with the term's create revision: a write guarded by it cannot be
// made by a deposed leader.
func (t *Term) Guard() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(t.leader.Key), "=", t.leader.Rev)
}

// Resign ends the term: it deletes the leader key (the next candidate takes
// over at once) and revokes the session's lease. Safe to call more than once.
func (t *Term) Resign(ctx context.Context) error {
	var err error
	t.resignOnce.Do(func() {
		err = t.election.Resign(ctx)
		if cerr := t.session.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			err = fmt.Errorf("cluster: resign: %w", err)
		}
	})
	return err
}

// Leader returns the current leader, or ErrNoLeader.
func (e *Election) Leader(ctx context.Context) (Leader, error) {
	l, _, err := e.leader(ctx)
	return l, err
}

func (e *Election) leader(ctx context.Context) (Leader, int64, error) {
	resp, err := e.cli.Get(ctx, e.prefix, clientv3.WithFirstCreate()...)
	if err != nil {
		return Leader{}, 0, fmt.Errorf("cluster: leader: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return Leader{}, resp.Header.Revision, ErrNoLeader
	}
	kv := resp.Kvs[0]
	l := Leader{Key: string(kv.Key), Rev: kv.CreateRevision}
	if err := json.Unmarshal(kv.Value, &l.Member); err != nil {
		return Leader{}, 0, fmt.Errorf("cluster: leader: decode %s: %w", kv.Key, err)
	}
	return l, resp.Header.Revision, nil
}

// Observe sends the current leader, then every change of leader, until ctx
// ends; then it closes the channel. A zero Leader (Key "") means nobody
// leads. Transient etcd errors are retried.
func (e *Election) Observe(ctx context.Context) <-chan Leader {
	ch := make(chan Leader)
	go func() {
		defer close(ch)
		last := Leader{Key: "\x00"} // differs from every real and the zero Leader
		for b := newBackoff(); ctx.Err() == nil; {
			l, rev, err := e.leader(ctx)
			if err != nil && !errors.Is(err, ErrNoLeader) {
				b.Wait(ctx)
				continue
			}
			b.Reset()
			if l.Key != last.Key || l.Rev != last.Rev {
				select {
				case ch <- l:
					last = l
				case <-ctx.Done():
					return
				}
			}
			// Wait for any change under the prefix, then look again.
			wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
			wch := e.cli.Watch(wctx, e.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
			select {
			case <-ctx.Done():
			case <-wch:
			}
			cancel()
		}
	}()
	return ch
}
