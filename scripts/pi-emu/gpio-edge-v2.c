/*
 * gpio-edge-v2: holds one line of a gpiochip for both edges through the
 * kernel's GPIO character device, uAPI v2 (what the gpiocdev crate speaks),
 * and prints each edge event with the kernel's timestamp and sequence
 * numbers. libgpiod 1.6 (Debian 12's gpiomon) speaks uAPI v1, which has no
 * sequence numbers and no debounce; this is the v2 witness beside it.
 *
 *   gpio-edge-v2 /dev/gpiochipN LINE [DEBOUNCE_US [COUNT [TIMEOUT_MS]]]
 *   gpio-edge-v2 /dev/gpiochipN LINE info
 *
 * The second form requests nothing: it says what the kernel does with a
 * line another program holds (the debounce it took, say):
 *   LINEINFO line=L consumer=C flags=0x.. debounce_us=D
 * The first prints, one per line:
 *   REQUESTED line=L consumer=C flags=0x.. debounce_us=D (as the kernel reports it back)
 *   EVENT RISING|FALLING ts_ns=T seqno=S line_seqno=LS offset=L level=0|1
 *   DONE events=N            (COUNT events seen)
 *   TIMEOUT events=N         (TIMEOUT_MS passed without the next event)
 *   ERROR what: strerror (errno N)
 * Built static with Debian's aarch64 cross gcc by scripts/pi-emu/virt-edges.sh.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/gpio.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static int fail(const char *what)
{
	int e = errno;
	printf("ERROR %s: %s (errno %d)\n", what, strerror(e), e);
	fflush(stdout);
	return 1;
}

/* The kernel's word on LINE: its flags, consumer and debounce (0: none). */
static int line_info(int chip, unsigned line, struct gpio_v2_line_info *info, unsigned *debounce)
{
	memset(info, 0, sizeof *info);
	info->offset = line;
	if (ioctl(chip, GPIO_V2_GET_LINEINFO_IOCTL, info) < 0)
		return -1;
	*debounce = 0;
	for (unsigned i = 0; i < info->num_attrs; i++)
		if (info->attrs[i].id == GPIO_V2_LINE_ATTR_ID_DEBOUNCE)
			*debounce = info->attrs[i].debounce_period_us;
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s /dev/gpiochipN LINE [DEBOUNCE_US [COUNT [TIMEOUT_MS]]]\n"
				"       %s /dev/gpiochipN LINE info\n", argv[0], argv[0]);
		return 2;
	}
	unsigned line = (unsigned)strtoul(argv[2], NULL, 10);
	struct gpio_v2_line_info info;
	unsigned reported;
	if (argc == 4 && strcmp(argv[3], "info") == 0) {
		int chip = open(argv[1], O_RDONLY | O_CLOEXEC);
		if (chip < 0)
			return fail("open chip");
		if (line_info(chip, line, &info, &reported) < 0)
			return fail("line info");
		printf("LINEINFO line=%u consumer=%s flags=0x%llx debounce_us=%u\n", line,
		       info.consumer, (unsigned long long)info.flags, reported);
		return 0;
	}
	unsigned debounce = argc > 3 ? (unsigned)strtoul(argv[3], NULL, 10) : 0;
	unsigned count = argc > 4 ? (unsigned)strtoul(argv[4], NULL, 10) : 1;
	int timeout = argc > 5 ? atoi(argv[5]) : 10000;

	int chip = open(argv[1], O_RDWR | O_CLOEXEC);
	if (chip < 0)
		return fail("open chip");

	struct gpio_v2_line_request req;
	memset(&req, 0, sizeof req);
	req.offsets[0] = line;
	req.num_lines = 1;
	strncpy(req.consumer, "gpio-edge-v2", sizeof req.consumer - 1);
	req.config.flags = GPIO_V2_LINE_FLAG_INPUT | GPIO_V2_LINE_FLAG_EDGE_RISING |
			   GPIO_V2_LINE_FLAG_EDGE_FALLING;
	if (debounce) {
		req.config.num_attrs = 1;
		req.config.attrs[0].attr.id = GPIO_V2_LINE_ATTR_ID_DEBOUNCE;
		req.config.attrs[0].attr.debounce_period_us = debounce;
		req.config.attrs[0].mask = 1;
	}
	if (ioctl(chip, GPIO_V2_GET_LINE_IOCTL, &req) < 0)
		return fail("request line");

	/* What the kernel says it now does with the line. */
	if (line_info(chip, line, &info, &reported) < 0)
		return fail("line info");
	struct gpio_v2_line_values vals = {.bits = 0, .mask = 1};
	if (ioctl(req.fd, GPIO_V2_LINE_GET_VALUES_IOCTL, &vals) < 0)
		return fail("read level");
	printf("REQUESTED line=%u consumer=%s flags=0x%llx debounce_us=%u level=%llu\n", line,
	       info.consumer, (unsigned long long)info.flags, reported,
	       (unsigned long long)(vals.bits & 1));
	fflush(stdout);

	unsigned seen = 0;
	while (seen < count) {
		struct pollfd p = {.fd = req.fd, .events = POLLIN};
		int n = poll(&p, 1, timeout);
		if (n < 0)
			return fail("poll");
		if (n == 0) {
			printf("TIMEOUT events=%u\n", seen);
			return 3;
		}
		struct gpio_v2_line_event ev;
		ssize_t got = read(req.fd, &ev, sizeof ev);
		if (got != (ssize_t)sizeof ev)
			return fail("read event");
		vals.bits = 0;
		if (ioctl(req.fd, GPIO_V2_LINE_GET_VALUES_IOCTL, &vals) < 0)
			return fail("read level");
		seen++;
		printf("EVENT %s ts_ns=%llu seqno=%u line_seqno=%u offset=%u level=%llu\n",
		       ev.id == GPIO_V2_LINE_EVENT_RISING_EDGE ? "RISING" : "FALLING",
		       (unsigned long long)ev.timestamp_ns, ev.seqno, ev.line_seqno, ev.offset,
		       (unsigned long long)(vals.bits & 1));
		fflush(stdout);
	}
	printf("DONE events=%u\n", seen);
	return 0;
}
