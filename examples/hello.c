/* The README's example: IoU of two boxes on the CPU backend. */
#include <detpost.h>
#include <stdio.h>

int main(void)
{
    const float a[] = {0, 0, 10, 10}, b[] = {5, 0, 15, 10};
    float iou = 0;
    detpost_ctx *ctx = NULL;
    detpost_status st = detpost_create(&ctx, DETPOST_CPU, 0);
    if (st == DETPOST_OK) st = detpost_box_overlaps(ctx, NULL, a, 1, b, 1, 1, &iou);
    if (st != DETPOST_OK) {
        fprintf(stderr, "%s: %s\n", detpost_status_name(st), detpost_last_error(ctx));
        detpost_destroy(ctx);
        return 1;
    }
    printf("detpost %s: IoU = %.4f\n", detpost_version_string(), iou); /* 50 / 150 */
    detpost_destroy(ctx);
    return 0;
}
