package sqslocal

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/google/uuid"
)

var emu *Emulator

func TestMain(m *testing.M) {
	var err error
	if emu, err = Start("127.0.0.1:0", 100*time.Millisecond); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	emu.Close()
	os.Exit(code)
}

// client is the AWS SDK against the emulator, over a real socket, with
// the request-body wrapper the services use against an emulator (see
// plainBodyClient in pkg/queue).
func client() *sqs.Client {
	return sqs.New(sqs.Options{
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider("test", "test", ""),
		BaseEndpoint: aws.String(emu.URL),
		HTTPClient:   plainBodyClient{http.DefaultClient},
	})
}

// plainBodyClient hides io.WriterTo on request bodies. Without it net/http
// sometimes drops the connection while reading a response, when its
// WriteTo of the request body returns after the SDK has closed the body;
// the SDK then retries, and a received batch is orphaned until its
// visibility timeout.
type plainBodyClient struct{ *http.Client }

func (c plainBodyClient) Do(r *http.Request) (*http.Response, error) {
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = struct{ io.ReadCloser }{r.Body}
	}
	return c.Client.Do(r)
}

// newQueue creates a queue of the test's own; a name ending in .fifo makes
// it FIFO.
func newQueue(t testing.TB, suffix string, attrs map[string]string) (name, url string) {
	t.Helper()
	name = "t" + strings.ReplaceAll(uuid.NewString()[:13], "-", "") + suffix
	out, err := client().CreateQueue(context.Background(), &sqs.CreateQueueInput{QueueName: aws.String(name), Attributes: attrs})
	if err != nil {
		t.Fatal(err)
	}
	return name, aws.ToString(out.QueueUrl)
}

func send(t *testing.T, url, group, body string) *sqs.SendMessageOutput {
	t.Helper()
	out, err := client().SendMessage(context.Background(), &sqs.SendMessageInput{
		QueueUrl: aws.String(url), MessageBody: aws.String(body),
		MessageGroupId: aws.String(group), MessageDeduplicationId: aws.String(uuid.NewString()),
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type receiveOpt func(*sqs.ReceiveMessageInput)

func maxMessages(n int32) receiveOpt {
	return func(in *sqs.ReceiveMessageInput) { in.MaxNumberOfMessages = n }
}

func wait(s int32) receiveOpt {
	return func(in *sqs.ReceiveMessageInput) { in.WaitTimeSeconds = s }
}

func visibility(s int32) receiveOpt {
	return func(in *sqs.ReceiveMessageInput) { in.VisibilityTimeout = s }
}

// receive asks for all system attributes and up to 10 messages unless told
// otherwise.
func receive(t *testing.T, url string, opts ...receiveOpt) []types.Message {
	t.Helper()
	in := &sqs.ReceiveMessageInput{
		QueueUrl: aws.String(url), MaxNumberOfMessages: 10,
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll},
	}
	for _, o := range opts {
		o(in)
	}
	out, err := client().ReceiveMessage(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	return out.Messages
}

func bodies(msgs []types.Message) string {
	b := make([]string, len(msgs))
	for i, m := range msgs {
		b[i] = aws.ToString(m.Body)
	}
	return strings.Join(b, ",")
}

func deleteAll(t *testing.T, url string, msgs []types.Message) {
	t.Helper()
	for _, m := range msgs {
		if _, err := client().DeleteMessage(context.Background(), &sqs.DeleteMessageInput{QueueUrl: aws.String(url), ReceiptHandle: m.ReceiptHandle}); err != nil {
			t.Fatal(err)
		}
	}
}
