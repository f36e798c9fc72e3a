package cluster

import (
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// NewClient returns an etcd client with the settings every role uses: a
// dial timeout, gRPC keepalives that notice a dead connection within a few
// seconds, and no client-side logging (the client logs every retry while
// etcd is down). clientv3.New does not block: an unreachable etcd shows up
// as errors on the first requests, which callers retry.
func NewClient(endpoints []string) (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: etcd client %v: %w", endpoints, err)
	}
	return cli, nil
}
