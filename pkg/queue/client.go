package queue

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
)

// AWS returns the SDK configuration and client options for c: the default
// credential chain for real SQS, or static test credentials and a base
// endpoint for an emulator.
func (c Config) AWS(ctx context.Context) (aws.Config, []func(*sqs.Options), error) {
	if c.Endpoint == "" {
		cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(c.Region))
		if err != nil {
			return aws.Config{}, nil, fmt.Errorf("load AWS config: %w", err)
		}
		return cfg, nil, nil
	}
	cfg := aws.Config{
		Region:           c.Region,
		Credentials:      credentials.NewStaticCredentialsProvider("test", "test", ""),
		HTTPClient:       awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) { t.MaxIdleConnsPerHost = 64 }),
		RetryMaxAttempts: 3,
	}
	cfg.HTTPClient = plainBodyClient{cfg.HTTPClient}
	endpoint := c.Endpoint
	return cfg, []func(*sqs.Options){func(o *sqs.Options) { o.BaseEndpoint = aws.String(endpoint) }}, nil
}

// NewClient returns an SQS client for c.
func NewClient(ctx context.Context, c Config) (*sqs.Client, error) {
	cfg, opts, err := c.AWS(ctx)
	if err != nil {
		return nil, err
	}
	return sqs.NewFromConfig(cfg, opts...), nil
}

// plainBodyClient hides io.WriterTo on request bodies. With an emulator on
// loopback, net/http's use of WriterTo raced with the SDK closing the body:
// the connection dropped mid-response and received messages were orphaned
// until their visibility timeout (see docs/sqs.md).
type plainBodyClient struct{ aws.HTTPClient }

func (c plainBodyClient) Do(r *http.Request) (*http.Response, error) {
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = struct{ io.ReadCloser }{r.Body}
	}
	return c.HTTPClient.Do(r)
}

// requestTimeout bounds one SQS call that has no caller deadline.
const requestTimeout = 10 * time.Second
