package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/internal/testenv"
)

// parleyBin is the binary built once by TestMain.
var parleyBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "parley-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	parleyBin = filepath.Join(dir, "parley")
	build := exec.Command("go", "build", "-o", parleyBin, "../cmd/parley")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build parley:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const tokenKey = "e2e-token-key-0123456789abcdefghijklmnop"

// cluster is one test's Parley deployment on the shared real services, with
// its own Redis prefix, Kafka topic and group, and database.
type cluster struct {
	t        testing.TB
	name     string
	redis    string
	brokers  string
	mongoURI string
	servers  []*proc
	pers     *proc
	db       *mongo.Database
}

// proc is a running parley process.
type proc struct {
	cmd  *exec.Cmd
	addr string
	log  string
	done chan struct{}
}

// newCluster starts servers instances (with extra flags) and a persister.
func newCluster(t *testing.T, servers int, extra ...string) *cluster {
	t.Helper()
	c := &cluster{
		t:        t,
		name:     testenv.Name(t),
		redis:    testenv.RedisURL(t),
		brokers:  strings.Join(testenv.KafkaBrokers(t), ","),
		mongoURI: testenv.MongoURI(t),
	}
	mc, err := mongo.Connect(options.Client().ApplyURI(c.mongoURI))
	if err != nil {
		t.Fatal(err)
	}
	c.db = mc.Database(c.name)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = c.db.Drop(ctx)
		_ = mc.Disconnect(ctx)
	})
	for i := 0; i < servers; i++ {
		c.servers = append(c.servers, c.startServer(i, extra...))
	}
	c.startPersister()
	for _, s := range c.servers {
		c.waitReady(s)
	}
	return c
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (c *cluster) start(name string, args ...string) *proc {
	c.t.Helper()
	logPath := filepath.Join(c.t.TempDir(), name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(parleyBin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	p := &proc{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	c.t.Cleanup(func() {
		p.stop()
		if c.t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			c.t.Logf("--- %s log (tail) ---\n%s", name, b)
		}
	})
	return p
}

// stop sends SIGTERM and waits, then SIGKILL after 15 s.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// kill sends SIGKILL and waits.
func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

func (c *cluster) startServer(i int, extra ...string) *proc {
	addr := freeAddr(c.t)
	p := c.start(fmt.Sprintf("server%d", i), append([]string{"server",
		"-addr", addr,
		"-redis-url", c.redis, "-redis-prefix", c.name + ":",
		"-kafka-brokers", c.brokers, "-topic", c.name, "-partitions", "4",
		"-mongo-uri", c.mongoURI, "-database", c.name,
		"-token-key", tokenKey,
		"-argon2-memory-kib", "1024", "-argon2-time", "1",
		"-send-rate", "100000", "-send-burst", "100000", "-frame-rate", "100000", "-frame-burst", "100000",
		"-web-dir", "/nonexistent",
		"-log-format", "text"}, extra...)...)
	p.addr = addr
	return p
}

func (c *cluster) startPersister() {
	c.pers = c.start("persister", "persister",
		"-kafka-brokers", c.brokers, "-topic", c.name, "-dlq-topic", c.name+".dlq", "-group", c.name,
		"-partitions", "4", "-mongo-uri", c.mongoURI, "-database", c.name, "-metrics-addr", "",
		"-log-format", "text")
}

func (c *cluster) waitReady(p *proc) {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + p.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-p.done:
			c.t.Fatalf("server %s exited during start-up (log: %s)", p.addr, p.log)
		default:
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("server %s not ready after 60s: %v", p.addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// conn dials server i with the generated Go client.
func (c *cluster) conn(i int) *grpc.ClientConn {
	c.t.Helper()
	cc, err := grpc.NewClient(c.servers[i].addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cc.Close() })
	return cc
}

// user is a signed-up user with clients on one server.
type user struct {
	name  string
	id    string
	token string
	auth  parleyv1.AuthServiceClient
	rooms parleyv1.RoomServiceClient
	chat  parleyv1.ChatServiceClient
}

func (u *user) ctx(parent context.Context) context.Context {
	return metadata.AppendToOutgoingContext(parent, "authorization", "Bearer "+u.token)
}

func (c *cluster) signUp(server int, name string) *user {
	c.t.Helper()
	cc := c.conn(server)
	u := &user{name: name, auth: parleyv1.NewAuthServiceClient(cc), rooms: parleyv1.NewRoomServiceClient(cc), chat: parleyv1.NewChatServiceClient(cc)}
	resp, err := u.auth.SignUp(context.Background(), &parleyv1.SignUpRequest{Username: name, Password: "password-" + name})
	if err != nil {
		c.t.Fatalf("sign up %s: %v", name, err)
	}
	u.id, u.token = resp.User.UserId, resp.Tokens.AccessToken
	return u
}

// on returns u's clients on another server (same token).
func (c *cluster) on(server int, u *user) *user {
	cc := c.conn(server)
	v := *u
	v.auth, v.rooms, v.chat = parleyv1.NewAuthServiceClient(cc), parleyv1.NewRoomServiceClient(cc), parleyv1.NewChatServiceClient(cc)
	return &v
}

// stored returns how many message documents the room has, and how many
// distinct message ids among them.
func (c *cluster) stored(room string) (docs int64, byID map[string]int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cur, err := c.db.Collection("messages").Find(ctx, bson.D{{Key: "room_id", Value: room}})
	if err != nil {
		c.t.Fatal(err)
	}
	var all []struct {
		ID string `bson:"_id"`
	}
	if err := cur.All(ctx, &all); err != nil {
		c.t.Fatal(err)
	}
	byID = map[string]int{}
	for _, d := range all {
		byID[d.ID]++
	}
	return int64(len(all)), byID
}

// waitStored waits until the room has n stored messages.
func (c *cluster) waitStored(room string, n int64, timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		docs, _ := c.stored(room)
		if docs >= n {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("room %s: %d of %d messages stored after %s", room, docs, n, timeout)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// assertStoredOnce waits until the room holds as many documents as acked
// messages, lets any late duplicate land, and checks that the store holds
// exactly the acked messages, each once.
func (c *cluster) assertStoredOnce(room string, acked map[string]bool, timeout time.Duration) {
	c.t.Helper()
	c.waitStored(room, int64(len(acked)), timeout)
	time.Sleep(2 * time.Second)
	docs, byID := c.stored(room)
	if docs != int64(len(acked)) {
		c.t.Fatalf("%d documents for %d acked messages", docs, len(acked))
	}
	for id := range acked {
		if byID[id] != 1 {
			c.t.Fatalf("acked message %s stored %d times", id, byID[id])
		}
	}
}
