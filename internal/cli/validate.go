package cli

import (
	"fmt"

	"github.com/dray-dev/dray/internal/spec"
	"github.com/spf13/cobra"
)

// validation is what `dray validate --json` prints.
type validation struct {
	OK     bool          `json:"ok"`
	Errors []*spec.Error `json:"errors"`
}

func (e *env) validateCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Load every file of the project and print every problem with file:line:col",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			proj, _, err := e.loadProject()
			if err != nil {
				return err
			}
			if asJSON {
				v := validation{OK: len(proj.Errors) == 0, Errors: proj.Errors}
				if v.Errors == nil {
					v.Errors = []*spec.Error{}
				}
				if err := writeJSON(e.stdout, v); err != nil {
					return err
				}
				if !v.OK {
					return &exitError{code: ExitBadInput}
				}
				return nil
			}
			if len(proj.Errors) > 0 {
				noun := "problems"
				if len(proj.Errors) == 1 {
					noun = "problem"
				}
				return badInput(fmt.Errorf("%w\n%d %s", proj.Errors, len(proj.Errors), noun))
			}
			noun := "pipelines"
			if len(proj.Pipelines) == 1 {
				noun = "pipeline"
			}
			fmt.Fprintf(e.stdout, "ok: %d %s\n", len(proj.Pipelines), noun)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"ok": bool, "errors": [{"file", "line", "col", "message"}]}`)
	return cmd
}
