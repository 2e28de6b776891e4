package cli

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/moby/moby/client"
	"github.com/rogpeppe/go-internal/testscript"

	"github.com/dray-dev/dray/internal/awsfake"
)

// cmdAWSFake drives a fake ECS and CloudWatch Logs (internal/awsfake) in the
// test process, whose tasks run on the local Docker engine in the busybox
// test image (ECS image names busybox and registry.example/etl:2 map to it):
//
//	awsfake start                 start it; AWS_ENDPOINT_URL and test
//	                              credentials point dray's SDK at it
//	awsfake register FAMILY       register FAMILY: container main, busybox,
//	                              logs to group dray with prefix task
//	awsfake cluster NAME          create a cluster
//	awsfake faults [stuck=FAMILY] [throttle=0.3] [runfail=N]
//	                              set the faults (none: clear them)
//	awsfake revisions FAMILY      print the ARNs of FAMILY's revisions
//	awsfake tasks STATUS CLUSTER...
//	                              print the ARNs of the clusters' tasks
//	                              whose last status is STATUS
func cmdAWSFake(busybox string) func(ts *testscript.TestScript, neg bool, args []string) {
	fakes := map[*testscript.TestScript]*awsfake.Server{}
	return func(ts *testscript.TestScript, neg bool, args []string) {
		if neg || len(args) == 0 {
			ts.Fatalf("usage: awsfake start|register|cluster|faults|tasks ...")
		}
		if args[0] == "start" {
			cli, err := client.New(client.FromEnv)
			ts.Check(err)
			fake := awsfake.New(awsfake.Config{Docker: cli, Images: map[string]string{"busybox": busybox, "registry.example/etl:2": busybox}})
			srv := httptest.NewServer(fake)
			ts.Defer(func() {
				srv.Close()
				if err := fake.Close(); err != nil {
					ts.Logf("close the fake: %v", err)
				}
				cli.Close()
			})
			fakes[ts] = fake
			for k, v := range map[string]string{
				"AWS_ENDPOINT_URL": srv.URL, "AWS_REGION": awsfake.Region, "AWS_ACCESS_KEY_ID": "AKID",
				"AWS_SECRET_ACCESS_KEY": "SECRET", "AWS_EC2_METADATA_DISABLED": "true",
			} {
				ts.Setenv(k, v)
			}
			return
		}
		// Asking for Stdout clears what the last command printed, so that
		// a command that prints nothing leaves nothing there.
		stdout := ts.Stdout()
		fake := fakes[ts]
		if fake == nil {
			ts.Fatalf("awsfake %s: run awsfake start first", args[0])
		}
		api := ecs.New(ecs.Options{
			Region: awsfake.Region, BaseEndpoint: aws.String(ts.Getenv("AWS_ENDPOINT_URL")),
			Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", ""),
		})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		switch args[0] {
		case "register":
			if len(args) != 2 {
				ts.Fatalf("usage: awsfake register FAMILY")
			}
			_, err := api.RegisterTaskDefinition(ctx, awsfake.FargateTaskDefinition(args[1], "busybox", "dray"))
			ts.Check(err)
		case "cluster":
			if len(args) != 2 {
				ts.Fatalf("usage: awsfake cluster NAME")
			}
			_, err := api.CreateCluster(ctx, &ecs.CreateClusterInput{ClusterName: aws.String(args[1])})
			ts.Check(err)
		case "faults":
			var f awsfake.Faults
			for _, a := range args[1:] {
				k, v, _ := strings.Cut(a, "=")
				switch k {
				case "stuck":
					f.StuckTasks = append(f.StuckTasks, v)
				case "throttle":
					_, err := fmt.Sscan(v, &f.ThrottleRate)
					ts.Check(err)
				case "runfail":
					_, err := fmt.Sscan(v, &f.RunTaskFailures)
					ts.Check(err)
				default:
					ts.Fatalf("awsfake faults: unknown fault %q", k)
				}
			}
			fake.SetFaults(f)
		case "revisions":
			if len(args) != 2 {
				ts.Fatalf("usage: awsfake revisions FAMILY")
			}
			out, err := api.ListTaskDefinitions(ctx, &ecs.ListTaskDefinitionsInput{FamilyPrefix: aws.String(args[1])})
			ts.Check(err)
			for _, arn := range out.TaskDefinitionArns {
				fmt.Fprintln(stdout, arn)
			}
		case "tasks":
			if len(args) < 3 {
				ts.Fatalf("usage: awsfake tasks STATUS CLUSTER...")
			}
			for _, c := range args[2:] {
				var arns []string
				for _, st := range []ecstypes.DesiredStatus{ecstypes.DesiredStatusRunning, ecstypes.DesiredStatusStopped} {
					list, err := api.ListTasks(ctx, &ecs.ListTasksInput{Cluster: aws.String(c), DesiredStatus: st})
					ts.Check(err)
					arns = append(arns, list.TaskArns...)
				}
				for len(arns) > 0 {
					n := min(len(arns), 100)
					out, err := api.DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String(c), Tasks: arns[:n]})
					ts.Check(err)
					arns = arns[n:]
					for _, t := range out.Tasks {
						if aws.ToString(t.LastStatus) == args[1] {
							fmt.Fprintln(stdout, aws.ToString(t.TaskArn))
						}
					}
				}
			}
		default:
			ts.Fatalf("awsfake: unknown command %q", args[0])
		}
	}
}
