package cli

import (
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/rogpeppe/go-internal/testscript"

	"github.com/dray-dev/dray/internal/mototest"
)

// TestSecretsAWSScripts runs the scripts in testdata/script_aws against the
// real dray binary (the test binary, started as "dray"), with a moto_server
// holding SSM parameters and Secrets Manager secrets, and its endpoint and
// test credentials in dray's environment, as an agent would hold its own.
func TestSecretsAWSScripts(t *testing.T) {
	srv := mototest.Start(t)
	ctx := t.Context()
	params := ssm.NewFromConfig(srv.Config(), func(o *ssm.Options) { o.BaseEndpoint = aws.String(srv.URL) })
	for name, value := range map[string]string{
		"/dray/test/db_password":  "s3cr3t-from-ssm",
		"/dray/test/team/api_key": "nested-ssm-value",
	} {
		if _, err := params.PutParameter(ctx, &ssm.PutParameterInput{
			Name: aws.String(name), Value: aws.String(value), Type: ssmtypes.ParameterTypeSecureString,
		}); err != nil {
			t.Fatalf("put parameter %s: %v", name, err)
		}
	}
	sm := secretsmanager.NewFromConfig(srv.Config(), func(o *secretsmanager.Options) { o.BaseEndpoint = aws.String(srv.URL) })
	if _, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{
		Name: aws.String("dray/test/db"), SecretString: aws.String(`{"password": "pw-from-secretsmanager", "port": 5432}`),
	}); err != nil {
		t.Fatalf("create secret: %v", err)
	}

	testscript.Run(t, testscript.Params{
		Dir: "testdata/script_aws",
		Setup: func(env *testscript.Env) error {
			env.Setenv("NO_COLOR", "1")
			// testscript's environment holds nothing of this machine's
			// (HOME=/no-home: no ~/.aws files); add moto's.
			for _, kv := range srv.Env() {
				k, v, _ := strings.Cut(kv, "=")
				env.Setenv(k, v)
			}
			return nil
		},
	})
}
