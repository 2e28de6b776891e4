package spec

import (
	"reflect"
	"strings"
	"testing"
)

// TestSecretProviders checks what dray.yaml's secrets section decodes to.
// The bad inputs are in testdata/projects/config (TestLoadGolden); here are
// the values and defaults, and an error for each case that has one.
func TestSecretProviders(t *testing.T) {
	tests := []struct {
		name    string
		secrets string // the secrets section of dray.yaml
		want    []SecretProvider
		wantErr string
	}{
		{
			name: "none: the env provider",
			want: []SecretProvider{{Type: SecretEnv, Prefix: "DRAY_SECRET_"}},
		},
		{
			name: "env and file",
			secrets: `
  providers:
    - type: env
    - { type: env, prefix: APP_ }
    - { type: file, path: /run/secrets }`,
			want: []SecretProvider{
				{Type: SecretEnv, Prefix: "DRAY_SECRET_"},
				{Type: SecretEnv, Prefix: "APP_"},
				{Type: SecretFile, Path: "/run/secrets"},
			},
		},
		{
			name: "aws",
			secrets: `
  providers:
    - { type: aws_ssm, prefix: /dray/prod/, region: eu-west-1 }
    - type: aws_secretsmanager
      prefix: prod/
    - type: aws_ssm
    - { type: aws_secretsmanager, region: us-gov-west-1 }`,
			want: []SecretProvider{
				{Type: SecretAWSSSM, Prefix: "/dray/prod/", Region: "eu-west-1"},
				{Type: SecretAWSSecretsManager, Prefix: "prod/"},
				{Type: SecretAWSSSM},
				{Type: SecretAWSSecretsManager, Region: "us-gov-west-1"},
			},
		},
		{
			name: "aws_ssm: a flat prefix",
			secrets: `
  providers: [{ type: aws_ssm, prefix: dray_prod_ }]`,
			want: []SecretProvider{{Type: SecretAWSSSM, Prefix: "dray_prod_"}},
		},
		{
			name:    "aws_ssm takes no path",
			secrets: "\n  providers: [{ type: aws_ssm, path: /run/secrets }]",
			wantErr: "dray.yaml:8:15: secret provider aws_ssm takes prefix and region, not path",
		},
		{
			name:    "aws_secretsmanager takes no path",
			secrets: "\n  providers: [{ type: aws_secretsmanager, path: x }]",
			wantErr: "dray.yaml:8:15: secret provider aws_secretsmanager takes prefix and region, not path",
		},
		{
			name:    "file takes no region",
			secrets: "\n  providers: [{ type: file, path: x, region: eu-west-1 }]",
			wantErr: "dray.yaml:8:15: secret provider file takes path, not region",
		},
		{
			name:    "a region that is not one",
			secrets: "\n  providers: [{ type: aws_ssm, region: eu-west }]",
			wantErr: `dray.yaml:8:40: region must be an AWS region such as eu-west-1, not "eu-west"`,
		},
		{
			name:    "an unknown key",
			secrets: "\n  providers: [{ type: aws_ssm, regoin: eu-west-1 }]",
			wantErr: `dray.yaml:8:32: unknown key "regoin" in secret provider (did you mean "region"?)`,
		},
		{
			name:    "an unknown type lists the types",
			secrets: "\n  providers: [{ type: ssm }]",
			wantErr: `dray.yaml:8:15: unknown secret provider type "ssm" (types: env, file, aws_ssm, aws_secretsmanager)`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig
			if tt.secrets != "" {
				cfg += "secrets:" + tt.secrets + "\n"
			}
			proj := mustLoad(t, mapFS(map[string]string{ConfigFile: cfg}))
			if tt.wantErr != "" {
				if got := proj.Errors.Error(); !strings.Contains(got, tt.wantErr) {
					t.Fatalf("errors:\n%s\nwant one that says\n%s", got, tt.wantErr)
				}
				checkErrorList(t, mapFS(map[string]string{ConfigFile: cfg}), proj.Errors)
				return
			}
			if len(proj.Errors) > 0 {
				t.Fatalf("errors:\n%s", proj.Errors)
			}
			var got []SecretProvider
			for _, sp := range proj.Config.Secrets {
				v := *sp
				v.Pos = Pos{}
				got = append(got, v)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("providers = %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// TestSecretProvidersPos checks that each provider knows where it is
// written, for messages.
func TestSecretProvidersPos(t *testing.T) {
	src := testConfig + "secrets:\n  providers:\n    - type: env\n    - { type: aws_ssm, prefix: /dray/ }\n"
	proj := mustLoad(t, mapFS(map[string]string{ConfigFile: src}))
	if len(proj.Errors) > 0 {
		t.Fatalf("errors:\n%s", proj.Errors)
	}
	want := []Pos{{File: ConfigFile, Line: 9, Col: 7}, {File: ConfigFile, Line: 10, Col: 7}}
	for i, sp := range proj.Config.Secrets {
		if sp.Pos != want[i] {
			t.Errorf("provider %d at %v; want %v", i, sp.Pos, want[i])
		}
	}
}
