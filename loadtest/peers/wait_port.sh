# Sourced by run.sh and ab.sh: waits up to 10 s until 127.0.0.1:$1 takes a connection.
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
