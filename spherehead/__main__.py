from spherehead.cli import main

main(prog_name='spherehead')
