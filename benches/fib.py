# fib(27) by plain recursion, the same algorithm as fib.strm (benches/run)
def fib(n):
    if n == 0:
        return 0
    if n == 1:
        return 1
    return fib(n - 1) + fib(n - 2)


print(fib(27))
