from gpudiag.cli import main

if __name__ == "__main__":
    # `python -m gpudiag` names itself like the console script: in errors, help and shell completion.
    main(prog_name="gpudiag")
